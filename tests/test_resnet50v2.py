"""ResNet50V2 as Keras builds it, the paper's head and its Keras parameter count, Keras weights files, their download.

Nothing here reaches the internet: Keras' parity is checked with a Keras model whose
random weights are written in the official file's HDF5 layout, and the download
against a server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import BARE_JPG, MASKED_JPG, serve_directory

torch = pytest.importorskip("torch", reason="ResNet50V2 tests need the train extra")

from maskwatch.model_files import ModelFileError  # noqa: E402
from maskwatch.training import keras_weights  # noqa: E402
from maskwatch.training.backbones import backbone_spec, create_backbone  # noqa: E402
from maskwatch.training.backbones.resnet50v2 import ResNet50V2  # noqa: E402
from maskwatch.training.keras_weights import KerasWeightsError, load_keras_h5, resolve_resnet50v2_weights  # noqa: E402
from maskwatch.training.model import freeze  # noqa: E402
from maskwatch.training.paper import build_paper_model, parameter_table  # noqa: E402

KERAS_2_VERSION = b"2.2.4"  # what the official file's attributes say it was written with (any value loads)


def write_keras2_h5(path: Path, layer_names: list[str], weights: dict[str, list[tuple[str, np.ndarray]]]) -> None:
    """Write weights as Keras 2's ``save_weights_to_hdf5_group`` did for the official files: root attributes
    ``layer_names``/``backend``/``keras_version``; a group per layer (sorted by name) with attribute
    ``weight_names`` = ["<layer>/<weight>:0", ...] and each dataset at ``<layer>/<layer>/<weight>:0``."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode("utf8") for name in layer_names]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = KERAS_2_VERSION
        for layer in sorted(layer_names):
            group = f.create_group(layer)
            names = [f"{layer}/{short}:0".encode() for short, _ in weights.get(layer, [])]
            group.attrs["weight_names"] = names
            for name, (_, value) in zip(names, weights.get(layer, []), strict=True):
                group.create_dataset(name.decode("utf8"), data=value)


def torch_to_keras_arrays(model: ResNet50V2) -> dict[str, list[tuple[str, np.ndarray]]]:
    """The inverse of the loader's mapping, in Keras' legacy weight order (trainable, then non-trainable)."""
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, module in model.keras_layers():
        if isinstance(module, torch.nn.Conv2d):
            pairs = [("kernel", module.weight.detach().numpy().transpose(2, 3, 1, 0))]
            if module.bias is not None:
                pairs.append(("bias", module.bias.detach().numpy()))
        else:
            pairs = [("gamma", module.weight.detach().numpy()), ("beta", module.bias.detach().numpy()),
                     ("moving_mean", module.running_mean.numpy()), ("moving_variance", module.running_var.numpy())]
        out[name] = [(short, np.ascontiguousarray(value)) for short, value in pairs]
    return out


def randomize_bn(model: ResNet50V2, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean, module.running_var):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)


def photos_224() -> np.ndarray:
    """The two real test photos, RGB, resized to 224 and scaled as Keras' resnet_v2.preprocess_input: NHWC."""
    from PIL import Image

    images = [
        np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
        for path in (MASKED_JPG, BARE_JPG)
    ]
    return np.stack(images).astype(np.float32) / 127.5 - 1.0


# --- the paper's figures --------------------------------------------------------------------------------------------


def test_paper_parameter_table_counts_like_keras() -> None:
    model = build_paper_model(pretrained=False, freeze_backbone=False)
    table = parameter_table(model)
    backbone = table.subtotal("backbone")
    # Keras' ResNet50V2(include_top=False).summary(): 23,564,800 total, of which the BN moving
    # mean/variance are the 45,440 non-trainable ones.
    assert backbone.params == 23_564_800
    assert backbone.non_trainable == 45_440
    freeze(model.backbone)  # the paper trains the head only
    table = parameter_table(model)
    print("\n" + table.format())
    heads = [r for r in table.rows if r.group.startswith("head") and r.params]
    assert [r.params for r in heads] == [102_761_472, 2_050]  # Dense(1024) on 7*7*2048, Dense(2)
    assert table.total == 126_328_322
    assert table.trainable == 102_763_522
    assert table.subtotal("backbone").trainable == 0


def test_paper_model_outputs_two_sigmoid_scores_and_keeps_frozen_bn_in_inference_mode() -> None:
    model = build_paper_model(pretrained=False)
    model.train()  # as a training loop would: the frozen backbone's BatchNorm must still use its statistics
    assert not model.backbone.training and model.head.training
    x = torch.from_numpy(photos_224()).permute(0, 3, 1, 2)
    with torch.no_grad():
        features = model.backbone.forward_features(x)
        scores = model.eval()(x)
        logits = model.logits(x)
    assert features.shape == (2, 2048, 7, 7)
    assert scores.shape == (2, 2)
    assert torch.allclose(scores, torch.sigmoid(logits))


def test_registry_has_resnet50v2_with_keras_preprocessing() -> None:
    spec = backbone_spec("resnet50v2")
    assert (spec.input_size, spec.feature_dim, spec.mean, spec.std) == (224, 2048, (127.5,) * 3, (127.5,) * 3)
    net = create_backbone("resnet50v2", pretrained=False).eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        assert torch.allclose(net(x), net.forward_features(x).mean(dim=(2, 3)))


# --- the loader -----------------------------------------------------------------------------------------------------


def test_loader_round_trips_every_weight(tmp_path: Path) -> None:
    pytest.importorskip("h5py", reason="Keras weights files need h5py (train extra)")
    source = ResNet50V2()
    randomize_bn(source, seed=1)
    names = [name for name, _ in source.keras_layers()]
    write_keras2_h5(tmp_path / "w.h5", ["input_1", *names], torch_to_keras_arrays(source))
    target = ResNet50V2()
    load_keras_h5(tmp_path / "w.h5", target.keras_layers())
    got, want = target.state_dict(), source.state_dict()
    compared = [k for k in want if not k.endswith("num_batches_tracked")]
    assert len(compared) == 53 + 21 + 49 * 4  # conv kernels, conv biases, BatchNorm gamma/beta/mean/variance
    for key in compared:
        assert torch.equal(got[key], want[key]), key


def test_loader_refuses_files_that_do_not_fit(tmp_path: Path) -> None:
    pytest.importorskip("h5py", reason="Keras weights files need h5py (train extra)")
    model = ResNet50V2()
    arrays = torch_to_keras_arrays(model)
    names = list(arrays)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    write_keras2_h5(tmp_path / "missing.h5", names[:-1], {k: arrays[k] for k in names[:-1]})
    with pytest.raises(KerasWeightsError, match="missing layers \\['post_bn'\\]"):
        load_keras_h5(tmp_path / "missing.h5", model.keras_layers())

    bad = dict(arrays)
    bad["conv5_block3_3_conv"] = [("kernel", np.zeros((1, 1, 512, 1024), np.float32)), arrays["conv5_block3_3_conv"][1]]
    write_keras2_h5(tmp_path / "shape.h5", names, bad)
    with pytest.raises(KerasWeightsError, match="conv5_block3_3_conv.*shape"):
        load_keras_h5(tmp_path / "shape.h5", model.keras_layers())

    # All or nothing: the failed loads changed nothing.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- parity with Keras ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    os.environ["KERAS_BACKEND"] = "torch"  # before the first import; Keras would default to TensorFlow
    return pytest.importorskip("keras", reason="Keras parity needs `pip install keras>=3` (run with the torch backend)")


def test_pinned_file_and_md5_are_keras_own(keras) -> None:
    from keras.src.applications import resnet

    assert resnet.BASE_WEIGHTS_PATH + keras_weights.RESNET50V2_FILE == keras_weights.RESNET50V2_URL
    assert resnet.WEIGHTS_HASHES["resnet50v2"][1] == keras_weights.RESNET50V2_MD5


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras' torch backend, numpy 2
def test_features_match_keras_resnet50v2(keras, tmp_path: Path) -> None:
    reference = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(224, 224, 3))
    # Every weight is drawn here, seeded: Keras initialises biases to 0 and BN to the identity, which would leave
    # bias/gamma/beta/moving-statistics mix-ups unseen. Kernels are glorot-uniform, as Keras draws them.
    rng = np.random.default_rng(0)
    arrays: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer in reference.layers:
        pairs = []
        for variable in layer.trainable_weights + layer.non_trainable_weights:  # Keras' legacy h5 order
            shape = tuple(variable.shape)
            if variable.name == "kernel":  # (H, W, in, out)
                limit = np.sqrt(6.0 / (np.prod(shape[:2]) * (shape[2] + shape[3])))
                value = rng.uniform(-limit, limit, shape)
            elif variable.name in ("bias", "beta", "moving_mean"):
                value = rng.normal(0.0, 0.1, shape)
            else:  # gamma, moving_variance
                value = rng.uniform(0.5, 1.5, shape)
            pairs.append((variable.name, value.astype(np.float32)))
        if pairs:
            arrays[layer.name] = pairs
    path = tmp_path / keras_weights.RESNET50V2_FILE
    write_keras2_h5(path, [layer.name for layer in reference.layers], arrays)
    # Keras' own loader reads the file (so its layout is what Keras loads) and gives the reference its weights.
    reference.load_weights(str(path))
    assert np.array_equal(keras.ops.convert_to_numpy(reference.get_layer("post_bn").moving_variance),
                          arrays["post_bn"][3][1])

    model = ResNet50V2().eval()
    keras_weights.load_resnet50v2_imagenet(model, path)

    x = photos_224()
    want = keras.ops.convert_to_numpy(reference(x, training=False))
    with torch.no_grad():
        got = model.forward_features(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert want.shape == got.shape == (2, 7, 7, 2048)
    diff = float(np.abs(want - got).max())
    print(f"\nKeras vs PyTorch ResNet50V2 features: max abs diff {diff:.3g} (features up to {np.abs(want).max():.3g}, "
          f"{(want > 0).mean():.0%} non-zero)")
    assert (want > 0).mean() > 0.1  # not a dead (all-ReLU-zero) map that would match trivially
    assert diff <= 1e-4


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_paper_head_matches_keras_flatten_dense_head(keras, tmp_path: Path) -> None:
    """Same head as Keras' Flatten -> Dense(ReLU) -> Dropout -> Dense(sigmoid), with Keras' weights loaded by the
    loader: proves the channels-last flatten order and the Dense kernel transpose (small sizes, same code)."""
    from maskwatch.training.paper import make_paper_head

    shape, hidden = (3, 3, 4), 5
    reference = keras.Sequential([
        keras.Input(shape),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(hidden, activation="relu", name="dense"),
        keras.layers.Dropout(0.5, name="dropout"),
        keras.layers.Dense(2, activation="sigmoid", name="dense_1"),
    ])
    rng = np.random.default_rng(0)
    arrays = {
        layer.name: [(v.name, rng.normal(0.0, 0.5, v.shape).astype(np.float32)) for v in layer.weights]
        for layer in reference.layers if layer.weights
    }
    for layer in reference.layers:
        if layer.weights:
            layer.set_weights([value for _, value in arrays[layer.name]])
    write_keras2_h5(tmp_path / "head.h5", [layer.name for layer in reference.layers], arrays)
    head = make_paper_head(in_features=int(np.prod(shape)), hidden=hidden).eval()
    load_keras_h5(tmp_path / "head.h5", [("dense", head[1]), ("dense_1", head[4])])

    x = rng.normal(size=(4, *shape)).astype(np.float32)
    want = keras.ops.convert_to_numpy(reference(x, training=False))
    with torch.no_grad():
        got = head(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()  # the head takes the NCHW map
    np.testing.assert_allclose(got, want, atol=1e-6)


# --- the download ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def weights_server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """Serves a small fake weights file at /good.h5 and a one-byte-corrupted copy at /bad.h5."""
    served = tmp_path / "served"
    served.mkdir()
    data = os.urandom(4096)
    (served / "good.h5").write_bytes(data)
    (served / "bad.h5").write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with serve_directory(served) as url:
        yield url, data


@pytest.fixture()
def empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights_server: tuple[str, bytes]) -> Path:
    """No local weights, an empty cache, and the served test file pinned as if it were Keras' own."""
    cache = tmp_path / "cache"
    monkeypatch.delenv(keras_weights.RESNET50V2_ENV, raising=False)
    monkeypatch.setenv("MASKWATCH_CACHE", str(cache))
    pinned = dataclasses.replace(keras_weights.RESNET50V2, sha256=hashlib.md5(weights_server[1]).hexdigest())
    monkeypatch.setattr(keras_weights, "RESNET50V2", pinned)
    return cache


def test_download_is_md5_verified_and_cached(weights_server: tuple[str, bytes], empty_cache: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url, data = weights_server
    monkeypatch.setenv(keras_weights.RESNET50V2_URL_ENV, f"{url}/good.h5")
    path = resolve_resnet50v2_weights()
    assert path == empty_cache / keras_weights.RESNET50V2_FILE and path.read_bytes() == data
    # Second call: the cache, re-verified; the URL may be gone.
    monkeypatch.setenv(keras_weights.RESNET50V2_URL_ENV, f"{url}/missing.h5")
    assert resolve_resnet50v2_weights() == path
    # A damaged cached copy is fetched again rather than used.
    path.write_bytes(b"damaged")
    monkeypatch.setenv(keras_weights.RESNET50V2_URL_ENV, f"{url}/good.h5")
    assert resolve_resnet50v2_weights().read_bytes() == data


def test_download_with_wrong_md5_is_refused(weights_server: tuple[str, bytes], empty_cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, data = weights_server
    monkeypatch.setenv(keras_weights.RESNET50V2_URL_ENV, f"{url}/bad.h5")
    with pytest.raises(ModelFileError, match="md5") as info:
        resolve_resnet50v2_weights()
    assert keras_weights.RESNET50V2_URL in str(info.value) and keras_weights.RESNET50V2_ENV in str(info.value)
    assert not any(empty_cache.glob("*"))  # nothing unverified is left behind


def test_explicit_path_and_env_var_come_before_the_cache(empty_cache: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local.h5"
    local.write_bytes(b"x")
    assert resolve_resnet50v2_weights(local) == local
    monkeypatch.setenv(keras_weights.RESNET50V2_ENV, str(local))
    assert resolve_resnet50v2_weights() == local
    monkeypatch.setenv(keras_weights.RESNET50V2_ENV, str(tmp_path / "nope.h5"))
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve_resnet50v2_weights()
    monkeypatch.delenv(keras_weights.RESNET50V2_ENV)
    with pytest.raises(ModelFileError, match="downloads are disabled"):
        resolve_resnet50v2_weights(download=False)
