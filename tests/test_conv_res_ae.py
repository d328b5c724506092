"""Residual conv autoencoder (`conv-res-ae`): shapes, L1 training, caching, resuming, pre-trained init."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from synthleak.config import MethodConfig, PretrainConfig
from synthleak.data.images import ImageSet
from synthleak.data.layout import AuditData
from synthleak.errors import CheckpointError, SynthleakError
from synthleak.features import get_extractor
from synthleak.features import conv_res_ae
from synthleak.features.conv_res_ae import ConvResAE, ConvResAEExtractor, ConvResEncoder, build_pretrain_encoder
from synthleak.models.checkpoint import save_checkpoint

from helpers import interrupt_training


@pytest.fixture(scope="module")
def phantoms() -> np.ndarray:
    from synthleak.bench.phantoms import make_phantoms

    return make_phantoms(6, 4, seed=2)[0]  # 24 images


def _cfg(tmp_path, **kw) -> MethodConfig:
    base = dict(seed=0, epochs=1, batch_size=8, image_size=16, quiet=True, cache_dir=str(tmp_path / "cache"),
                feature_space="conv-res-ae")
    base.update(kw)
    return MethodConfig(**base)


@pytest.mark.parametrize("size", [32, 40])
def test_shapes_and_filters(size):
    model = ConvResAE().eval()
    x = torch.rand(2, 1, size, size)
    with torch.no_grad():
        recon = model(x)
        feats = model.encoder(x)
    assert recon.shape == x.shape and 0 <= float(recon.min()) and float(recon.max()) <= 1
    assert feats.shape == (2, 256) and model.encoder.out_dim == 256
    assert [b.body[0].out_channels for b in model.encoder.blocks] == [32, 64, 128, 256]
    assert [b.body[0].out_channels for b in model.decoder.blocks] == [256, 128, 64, 32]
    assert ConvResEncoder(pool="avgmax").out_dim == 512


def test_pretrain_spec_contract():
    spec = build_pretrain_encoder(PretrainConfig(data=".", arch="conv-res", out="x", epochs=30, image_size=48))
    assert spec.input_size == 48 and spec.encoder.out_dim == 256 and spec.meta["arch"] == "conv-res"
    assert spec.encoder(torch.rand(3, 1, 48, 48)).shape == (3, 256)
    assert spec.step_size == 10 and spec.augment == "light"
    with pytest.raises(SynthleakError, match="dropout"):
        build_pretrain_encoder(PretrainConfig(data=".", arch="conv-res", out="x", options={"dropout": "2"}))


def test_training_reduces_l1_and_features_are_deterministic(tmp_path, phantoms):
    images = ImageSet.from_arrays(phantoms)
    ext = ConvResAEExtractor(_cfg(tmp_path, epochs=4)).fit(images)
    assert len(ext.history) == 4 and ext.history[-1] < ext.history[0]
    feats = ext.transform(images.subset(range(5)))
    assert feats.shape == (5, 256) and feats.dtype == np.float32 and np.isfinite(feats).all()
    # a second extractor with the same settings reuses the cached model instead of training
    other = ConvResAEExtractor(_cfg(tmp_path, epochs=4))
    other._train = lambda *a, **k: pytest.fail("retrained although the model was cached")
    other.fit(images)
    np.testing.assert_array_equal(other.transform(images.subset(range(5))), feats)
    assert other.cache_key() == ext.cache_key()
    assert ConvResAEExtractor(_cfg(tmp_path, epochs=3)).settings() != ext.settings()
    assert ext.reconstruction_error(images.subset(range(3))).shape == (3,)


def test_interrupted_training_resumes(tmp_path, phantoms, monkeypatch):
    images = ImageSet.from_arrays(phantoms[:12])
    interrupt_training(monkeypatch, at_call=2)
    with pytest.raises(KeyboardInterrupt):
        ConvResAEExtractor(_cfg(tmp_path, epochs=2)).fit(images)
    assert list((tmp_path / "cache" / "models" / "conv-res-ae").glob("*.partial"))
    resumed = ConvResAEExtractor(_cfg(tmp_path, epochs=2)).fit(images)
    fresh = ConvResAEExtractor(_cfg(tmp_path, epochs=2, cache_dir="none")).fit(images)
    assert len(resumed.history) == 2
    assert resumed.history == pytest.approx(fresh.history, rel=1e-5)
    assert not list((tmp_path / "cache" / "models" / "conv-res-ae").glob("*.partial"))


def test_init_from_pretrained_encoder(tmp_path):
    enc = ConvResEncoder()
    for p in enc.parameters():
        torch.nn.init.constant_(p, 0.01)
    state = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    state["head.weight"] = torch.zeros(4, 256)
    path = save_checkpoint(tmp_path / "enc.safetensors", state,
                           {"arch": "conv-res", "encoder_meta": {"filters": [32, 64, 128, 256]}})
    model = ConvResAEExtractor(_cfg(tmp_path, encoder=str(path)))._new_model()
    assert torch.equal(model.encoder.blocks[0].body[0].weight, enc.blocks[0].body[0].weight)
    # a different encoder file changes the cache identity
    assert ConvResAEExtractor(_cfg(tmp_path, encoder=str(path))).settings()["encoder"] is not None

    wrong = save_checkpoint(tmp_path / "vit.safetensors", state, {"arch": "vit"})
    with pytest.raises(CheckpointError, match="expected conv-res"):
        ConvResAEExtractor(_cfg(tmp_path, encoder=str(wrong)))._new_model()
    with pytest.raises(CheckpointError, match="does not exist"):
        ConvResAEExtractor(_cfg(tmp_path, encoder=str(tmp_path / "missing.safetensors")))


def test_is_a_feature_space_for_nearest(tmp_path, phantoms):
    from synthleak.methods import run_method

    sets = [ImageSet.from_arrays(phantoms[a:b], [f"{p}{i}" for i in range(b - a)])
            for a, b, p in ((0, 12, "g"), (12, 16, "u"), (16, 20, "n"), (20, 24, "t"))]
    data = AuditData(generated=sets[0], real_used=sets[1], real_not_used=sets[2], real_unknown=sets[3])
    assert isinstance(get_extractor("conv-res-ae", _cfg(tmp_path)), ConvResAEExtractor)
    res = run_method("nearest", data, _cfg(tmp_path))
    assert res.test_scores.shape == (4,) and res.labelled_scores.shape == (8,)
    assert np.isfinite(res.test_scores).all() and (res.test_scores <= 0).all()
    assert "conv-res-ae feature model" in res.trained_on
    assert conv_res_ae.DEFAULT_IMAGE_SIZE == 128
