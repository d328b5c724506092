"""ResNet autoencoder: architecture, cached + resumable training, checkpoints, feature space."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthleak.models.checkpoint import state_digest
from synthleak.cache import make_key
from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.errors import CheckpointError, SynthleakError
from synthleak.features import get_extractor
from synthleak.features import resnet_ae as rae
from synthleak.features.resnet_ae import ResNetAE, ResNetAEExtractor, load_resnet_ae, train_resnet_ae
from synthleak.models.checkpoint import save_checkpoint

from helpers import interrupt_training


def _images(n: int = 8, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    out = []
    for _ in range(n):
        cy, cx, r = rng.integers(80, 176, 2).tolist() + [int(rng.integers(30, 70))]
        img = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) * 150.0 + rng.normal(50, 10, (256, 256))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return ImageSet.from_arrays(np.stack(out))


def _cfg(tmp_path: Path, **kw) -> MethodConfig:
    base = dict(epochs=1, image_size=32, base_filters=8, batch_size=4, quiet=True, cache_dir=str(tmp_path / "cache"))
    base.update(kw)
    return MethodConfig(**base)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("size", [32, 128])
def test_architecture_shapes(size):
    torch.manual_seed(0)
    model = ResNetAE(image_size=size).eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        z, out = model.encode(x), model(x)
    assert z.shape == (2, 512)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # the paper's layout: four stride-2 encoder convs, decoder starts at S/8 (16x16x128 at 128)
    assert model.start == size // 8 and model.from_latent.out_features == 128 * (size // 8) ** 2
    strided = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert [m.out_channels for m in strided] == [32, 64, 128, 256]


def test_bad_image_size_is_user_error():
    with pytest.raises(SynthleakError, match="image-size"):
        rae.ResNetAESettings.from_config(MethodConfig(image_size=30))


def test_defaults_follow_the_paper():
    s = rae.ResNetAESettings.from_config(MethodConfig())
    assert (s.image_size, s.epochs, s.batch_size, s.lr, s.latent_dim) == (128, 50, 32, 1e-4, 512)


def test_training_is_cached_and_deterministic(tmp_path):
    images = _images()
    model, meta = train_resnet_ae(images, _cfg(tmp_path))
    files = list((tmp_path / "cache" / "models" / "resnet-ae").glob("*.safetensors"))
    assert len(files) == 1 and meta["final_l1"] > 0 and meta["seconds_per_epoch"] > 0
    assert not list(files[0].parent.glob("*.partial"))  # removed once training finished
    again, meta2 = train_resnet_ae(images, _cfg(tmp_path))  # loaded, not retrained
    assert _same_weights(model, again) and meta2["key"] == meta["key"]
    fresh, _ = train_resnet_ae(images, _cfg(tmp_path, cache_dir="none"))  # same seed, no cache
    assert _same_weights(model, fresh)
    other, _ = train_resnet_ae(images, _cfg(tmp_path, seed=1))
    assert not _same_weights(model, other)


def test_training_resumes_after_interruption(tmp_path, monkeypatch):
    images = _images()
    full, _ = train_resnet_ae(images, _cfg(tmp_path / "a", epochs=2))
    calls = interrupt_training(monkeypatch, at_call=2)
    with pytest.raises(KeyboardInterrupt):
        train_resnet_ae(images, _cfg(tmp_path / "b", epochs=2))
    assert len(list((tmp_path / "b" / "cache" / "models" / "resnet-ae").glob("*.partial"))) == 1
    resumed, _ = train_resnet_ae(images, _cfg(tmp_path / "b", epochs=2))
    assert calls == [0, 1, 1]  # epoch 0 was not repeated
    assert _same_weights(full, resumed)


def test_checkpoint_roundtrip_and_rejection(tmp_path):
    model, meta = train_resnet_ae(_images(4), _cfg(tmp_path))
    path = tmp_path / "ae.safetensors"
    save_checkpoint(path, model.state_dict(), meta)
    loaded, meta2 = load_resnet_ae(path)
    assert _same_weights(model, loaded) and meta2["image_size"] == 32
    save_checkpoint(tmp_path / "other.safetensors", model.state_dict(), {"arch": "vit-ae"})
    with pytest.raises(CheckpointError, match="not a resnet-ae checkpoint"):
        load_resnet_ae(tmp_path / "other.safetensors")
    # --weights: the extractor loads instead of training
    ext = ResNetAEExtractor(_cfg(tmp_path, weights=str(path), epochs=5)).fit(_images(2))
    assert _same_weights(model, ext.model)


def test_extractor_features_and_reconstruction_error(tmp_path):
    cfg = _cfg(tmp_path)
    ext = get_extractor("resnet-ae", cfg)
    assert isinstance(ext, ResNetAEExtractor) and ext.trainable
    with pytest.raises(SynthleakError, match="fit"):
        ext.transform(_images(2))
    ext.fit(_images())
    queries = ImageSet.from_arrays(np.stack([np.zeros((256, 256), np.uint8), np.full((256, 256), 255, np.uint8),
                                             _images(1, seed=5).pixels[0]]))
    feats = ext.extract(queries)
    err = ext.reconstruction_error(queries)
    assert feats.shape == (3, 512) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert err.shape == (3,) and np.isfinite(err).all() and (err >= 0).all() and (err <= 1).all()
    assert len(ext.feature_names()) == 512
    # the cache key identifies the weights: another seed trains another model
    other = ResNetAEExtractor(_cfg(tmp_path, seed=3)).fit(_images())
    assert other.cache_key() != ext.cache_key()
    assert ext.cache_key() == make_key("resnet-ae", rae.VERSION, state_digest(ext.model))


def test_nearest_in_resnet_ae_space(tiny_audit_data, tmp_path):
    from synthleak.methods import run_method

    cfg = _cfg(tmp_path, feature_space="resnet-ae")
    result = run_method("nearest", tiny_audit_data, cfg)
    assert result.test_scores.shape == (len(tiny_audit_data.real_unknown),)
    assert np.isfinite(result.test_scores).all() and np.isfinite(result.labelled_scores).all()
    assert "resnet-ae feature model" in result.trained_on


def test_autoencoder_pass_is_computed_once_per_set_and_only_the_last_is_kept():
    """Latent and error of one set come from one pass (also with --cache-dir none); a streamed set's chunks are
    not all kept in memory."""
    from synthleak.features.base import AutoencoderExtractor

    calls = []

    class Stub(AutoencoderExtractor):
        name = "stub-ae"
        pass_cache = "features/stub-ae-full"

        def train_model(self, synthetic, description=""):
            return object(), {}

        def model_digest(self):
            return "stub"

        def encode_pass(self, model, images):
            calls.append(images.ids[0])
            return np.c_[images.pixels.reshape(len(images), -1)[:, :3].astype(np.float32), np.arange(len(images))]

    rng = np.random.default_rng(0)
    a = ImageSet.from_arrays(rng.integers(0, 255, (4, 256, 256), dtype=np.uint8), [f"a{i}" for i in range(4)])
    b = ImageSet.from_arrays(rng.integers(0, 255, (3, 256, 256), dtype=np.uint8), [f"b{i}" for i in range(3)])
    stub = Stub(MethodConfig(cache_dir="none", quiet=True)).fit(a)
    latent, error = stub.transform(a), stub.reconstruction_error(a)
    assert calls == ["a0"] and latent.shape == (4, 3) and latent.dtype == np.float32
    np.testing.assert_array_equal(error, np.arange(4))
    stub.transform(b)
    stub.reconstruction_error(b)
    assert calls == ["a0", "b0"]
    stub.transform(a)  # only the last pass is held: a is read again
    assert calls == ["a0", "b0", "a0"]
