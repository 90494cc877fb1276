"""ImageNet-pretrained backbones by name, timm style: ``create_backbone("efficientnet_lite0")``.

A backbone is an ``nn.Module`` that maps a normalised (N, 3, S, S) batch to
(N, C) pooled features, and lists its ``blocks()`` bottom to top (what fine-tuning
unfreezes); its ``BackboneSpec`` carries the facts that preprocessing needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int  # default crop size; face crops are small, so it is below ImageNet's
    feature_dim: int
    mean: tuple[float, float, float]  # on the 0-255 scale, RGB
    std: tuple[float, float, float]
    weights: str  # where the pretrained weights come from


Factory = Callable[[bool, int, 'str | None'], nn.Module]  # (pretrained, input_size, weights_path) -> module
_REGISTRY: dict[str, tuple[BackboneSpec, Factory]] = {}


def register_backbone(spec: BackboneSpec) -> Callable[[Factory], Factory]:
    def add(factory: Factory) -> Factory:
        _REGISTRY[spec.name] = (spec, factory)
        return factory

    return add


def backbone_names() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def backbone_spec(name: str) -> BackboneSpec:
    _import_all()
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def create_backbone(
    name: str, pretrained: bool = True, input_size: int | None = None, weights_path: str | None = None
) -> nn.Module:
    """The named backbone; ``weights_path`` replaces its default source of pretrained weights."""
    spec = backbone_spec(name)
    return _REGISTRY[name][1](pretrained, input_size or spec.input_size, weights_path)


def _import_all() -> None:
    # Importing a module registers its backbones.
    from maskwatch.training.backbones import efficientnet_lite, resnet50v2  # noqa: F401
