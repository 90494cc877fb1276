"""ResNet50V2 (He et al., "Identity Mappings in Deep Residual Networks"), exactly as Keras builds it.

This is ``keras.applications.ResNet50V2(include_top=False)`` in plain PyTorch, so that
Keras' ImageNet file (``keras_weights.py``) loads into it one layer for one layer and
gives the same features. Keras' version differs from the paper's and from other
ports in ways that change the numbers, so they are copied on purpose:

* the stride 2 of a stage sits in its LAST block (conv2..conv4), whose shortcut is
  then a 1x1 max pool with stride 2; conv5 keeps stride 1;
* only the first block of a stage has a projection shortcut (``_0_conv``), fed by
  the pre-activated input; the other blocks add the raw input;
* convs have no bias except the stem conv, ``_0_conv`` and ``_3_conv``;
* the stem has no BatchNorm/ReLU (pre-activation), so its max pool sees negative
  values: Keras pads it with zeros, not with -inf as ``nn.MaxPool2d(padding=1)`` would;
* BatchNorm epsilon is 1.001e-5 and the output passes ``post_bn`` + ReLU.

Input: RGB scaled as ``x / 127.5 - 1`` (Keras' ``resnet_v2.preprocess_input``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from maskwatch.training.backbones import BackboneSpec, register_backbone

BN_EPS = 1.001e-5
BN_MOMENTUM = 0.01  # Keras' momentum 0.99 is PyTorch's 0.01 (weight of the new batch)
KERAS_MEAN = (127.5, 127.5, 127.5)
KERAS_STD = (127.5, 127.5, 127.5)
FEATURE_DIM = 2048
STAGES = (("conv2", 64, 3, 2), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 1))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class PreActBottleneck(nn.Module):
    """Keras' ``residual_block_v2``: BN-ReLU first, then 1x1 -> 3x3 (stride here) -> 1x1, plus shortcut."""

    def __init__(self, in_channels: int, filters: int, stride: int, conv_shortcut: bool) -> None:
        super().__init__()
        out_channels = 4 * filters
        self.preact_bn = _bn(in_channels)
        # Keras names: {block}_0_conv, _1_conv, _1_bn, _2_conv, _2_bn, _3_conv.
        self.conv0 = nn.Conv2d(in_channels, out_channels, 1, stride=stride) if conv_shortcut else None
        self.shortcut_pool = nn.MaxPool2d(1, stride=stride) if (stride > 1 and not conv_shortcut) else None
        self.conv1 = nn.Conv2d(in_channels, filters, 1, bias=False)
        self.bn1 = _bn(filters)
        # ZeroPadding2D(1) + "valid" 3x3 conv is exactly PyTorch's symmetric padding=1.
        self.conv2 = nn.Conv2d(filters, filters, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(filters)
        self.conv3 = nn.Conv2d(filters, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = F.relu(self.preact_bn(x))
        if self.conv0 is not None:
            shortcut = self.conv0(preact)
        elif self.shortcut_pool is not None:
            shortcut = self.shortcut_pool(x)
        else:
            shortcut = x
        y = F.relu(self.bn1(self.conv1(preact)))
        y = F.relu(self.bn2(self.conv2(y)))
        return shortcut + self.conv3(y)

    def keras_layers(self, prefix: str) -> Iterator[tuple[str, nn.Module]]:
        yield f"{prefix}_preact_bn", self.preact_bn
        if self.conv0 is not None:
            yield f"{prefix}_0_conv", self.conv0
        for name in ("conv1", "bn1", "conv2", "bn2", "conv3"):
            kind = "conv" if name.startswith("conv") else "bn"
            yield f"{prefix}_{name[-1]}_{kind}", getattr(self, name)


class ResNet50V2(nn.Module):
    """Keras' ResNet50V2 without top: (N, 3, S, S) -> ``forward_features`` (N, 2048, S/32, S/32); ``forward`` pools."""

    def __init__(self) -> None:
        super().__init__()
        # conv1_pad (3) + 7x7/2 "valid" conv == padding=3.
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.pool1 = nn.MaxPool2d(3, stride=2)  # after an explicit zero pad, see forward_features
        in_channels = 64
        for name, filters, blocks, stride in STAGES:
            stage = nn.Sequential(
                *(
                    PreActBottleneck(
                        in_channels if i == 0 else 4 * filters,
                        filters,
                        stride=stride if i == blocks - 1 else 1,
                        conv_shortcut=i == 0,
                    )
                    for i in range(blocks)
                )
            )
            setattr(self, name, stage)
            in_channels = 4 * filters
        self.post_bn = _bn(in_channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.pool1(F.pad(x, (1, 1, 1, 1)))  # pool1_pad: zeros, as Keras
        for name, *_ in STAGES:  # the stages are set by name in __init__, as Keras names them
            x = getattr(self, name)(x)
        return F.relu(self.post_bn(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))

    def blocks(self) -> list[nn.Module]:
        """Bottom to top, the units fine-tuning unfreezes: the stem, each bottleneck block, the final batch norm."""
        return [self.conv1, *(block for name, *_ in STAGES for block in getattr(self, name)), self.post_bn]

    def keras_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """(Keras layer name, module) for every layer that has weights, in Keras' naming."""
        yield "conv1_conv", self.conv1
        for name, _, blocks, _ in STAGES:
            stage = getattr(self, name)
            for i in range(blocks):
                yield from stage[i].keras_layers(f"{name}_block{i + 1}")
        yield "post_bn", self.post_bn


def resnet50v2(pretrained: bool = True, weights_path: str | os.PathLike | None = None) -> ResNet50V2:
    """ResNet50V2; with ``pretrained``, Keras' ImageNet weights (path, env var, cache or verified download)."""
    model = ResNet50V2()
    if pretrained:
        from maskwatch.training.keras_weights import load_resnet50v2_imagenet  # h5py only when needed

        load_resnet50v2_imagenet(model, weights_path)
    return model


SPEC = BackboneSpec(
    name="resnet50v2",
    input_size=224,  # the paper's size; Keras' weights were trained at 224
    feature_dim=FEATURE_DIM,
    mean=KERAS_MEAN,
    std=KERAS_STD,
    weights="ImageNet, Keras' resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5 (md5-verified)",
)


@register_backbone(SPEC)
def _create(pretrained: bool, input_size: int, weights_path: str | None = None) -> nn.Module:
    # Fully convolutional: any input size works, the pooled features stay 2048 wide.
    return resnet50v2(pretrained, weights_path)
