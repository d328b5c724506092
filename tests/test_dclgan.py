"""DCLGAN networks, losses, training/resume/cache and the dclgan-critic feature space."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.errors import SynthleakError
from synthleak.features import dclgan
from synthleak.models import engine
from synthleak.features.dclgan import (DCLGAN, CriticExtractor, DCLGANSettings, DCLGANTrainer,
                                       PatchGANDiscriminator, ResnetGenerator, histogram_loss, patch_nce_loss,
                                       read_critic, soft_histogram, split_halves, train_or_load)

TINY = dict(image_size=32, base_filters=4, resnet_blocks=2, batch_size=4, nce_patches=16, nce_dim=16)


def _images(n: int, seed: int = 0, size: int = 256) -> ImageSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(80, 176, 2).tolist() + [rng.uniform(20, 60)]
        img = 40 + 150 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r) + rng.normal(0, 10, (size, size))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return ImageSet.from_arrays(np.stack(out), [f"s{seed}_{i}" for i in range(n)])


def test_generator_shapes_and_encoder_features():
    g = ResnetGenerator(base_filters=4, n_blocks=3)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    out, feats = g(x, with_features=True)
    assert out.shape == (2, 1, 32, 32)
    assert out.min() >= -1 and out.max() <= 1  # Tanh output
    assert [f.shape[1] for f in feats] == g.feature_channels == [4, 8, 16, 16, 16]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 8, 8]
    enc = g(x, encode_only=True)
    assert len(enc) == len(feats) and all(torch.allclose(a, b) for a, b in zip(enc, feats))


def test_discriminator_has_five_spectral_norm_convs_and_patch_output():
    d = PatchGANDiscriminator(base_filters=4)
    convs = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(convs) == 5
    assert [c.kernel_size for c in convs] == [(4, 4)] * 5
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 1]
    for conv in convs:
        assert parametrize.is_parametrized(conv, "weight")
        assert any("SpectralNorm" in type(p).__name__ for p in conv.parametrizations.weight)
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in d.modules()) == 4
    assert d(torch.zeros(3, 1, 64, 64)).shape == (3, 1, 6, 6)


def test_hooks_expose_every_block_and_only_while_capturing():
    d = PatchGANDiscriminator(base_filters=4)
    out, acts = d.forward_with_activations(torch.rand(2, 1, 64, 64))
    assert list(acts) == ["block1", "block2", "block3", "block4"]
    assert {k: v.shape[1] for k, v in acts.items()} == d.block_channels == {
        "block1": 4, "block2": 8, "block3": 16, "block4": 32}
    assert d.HOOKED == ("block3", "block4")  # the two deepest hidden layers
    assert acts["block4"].shape[-1] == out.shape[-1] + 1
    d(torch.rand(1, 1, 64, 64))
    assert d.activations == {} and d.capture is False


def test_soft_histogram_loss_has_gradient_where_histc_has_none():
    real = torch.rand(2, 1, 16, 16) * 2 - 1
    fake = (torch.rand(2, 1, 16, 16) * 0.5).requires_grad_(True)
    hist = soft_histogram(fake, bins=16)
    assert torch.allclose(hist.sum(1), torch.ones(2), atol=1e-5)
    loss = histogram_loss(fake, real, bins=16)
    loss.backward()
    assert loss.item() > 0
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert torch.histc(fake, 16, -1, 1).grad_fn is None  # the public code's version: no gradient
    same = histogram_loss(real.clone().requires_grad_(True), real, bins=16)
    assert same.item() < 1e-4


def test_patch_nce_prefers_matching_patches():
    q = torch.nn.functional.normalize(torch.randn(2, 32, 16), dim=-1)
    matched = patch_nce_loss([q], [q.clone()], temperature=0.05)
    shuffled = patch_nce_loss([q], [q[:, torch.randperm(32)]], temperature=0.05)
    assert matched < 0.1 < shuffled


def test_settings_from_config_and_validation():
    cfg = MethodConfig(image_size=64, base_filters=8, epochs=3, batch_size=2, options={"resnet_blocks": "4"})
    s = dclgan.dclgan_settings(cfg)
    assert (s.image_size, s.base_filters, s.epochs, s.batch_size, s.resnet_blocks) == (64, 8, 3, 2, 4)
    default = dclgan.dclgan_settings(MethodConfig())
    assert (default.image_size, default.base_filters, default.epochs, default.resnet_blocks) == (256, 64, 200, 6)
    assert (default.lr_g, default.lr_d, default.nce_t) == (1e-4, 4e-4, 0.05)
    with pytest.raises(SynthleakError, match="image-size"):
        dclgan.dclgan_settings(MethodConfig(image_size=30))
    with pytest.raises(SynthleakError, match="resnet_blocks"):
        dclgan.dclgan_settings(MethodConfig(options={"resnet_blocks": "x"}))


def _tensors(n: int, seed: int) -> torch.Tensor:
    return dclgan.to_model_input(_images(n, seed).pixels, 32)


def test_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    s = DCLGANSettings(**TINY, epochs=2, r1_every=2)
    a, b = _tensors(8, 1), _tensors(8, 2)
    full = DCLGANTrainer(s, "cpu", seed=3)
    full.fit(a, b)

    partial = tmp_path / "m.partial.pt"
    real_save = engine.save_training_state

    def save_then_stop(path, obj):
        real_save(path, obj)
        raise KeyboardInterrupt  # simulated interruption right after epoch 1 was saved

    monkeypatch.setattr(engine, "save_training_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        DCLGANTrainer(s, "cpu", seed=3).fit(a, b, partial)
    monkeypatch.setattr(engine, "save_training_state", real_save)
    assert torch.load(partial, weights_only=True)["epoch"] == 1
    resumed = DCLGANTrainer(s, "cpu", seed=3)
    record = resumed.fit(a, b, partial)
    assert record.epochs_done == 2
    for (k, v), w in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-5), k


def test_train_or_load_uses_the_content_hash_cache(tmp_path, monkeypatch):
    cfg = MethodConfig(cache_dir=str(tmp_path), quiet=True, seed=1)
    s = DCLGANSettings(**TINY, epochs=1)
    a, b = split_halves(_images(8, 4), seed=1)
    first = train_or_load(a, b, s, cfg)
    assert first.meta["epochs_done"] == 1 and first.meta["domain_a"] == 4
    assert not list(tmp_path.rglob("*.partial.pt"))  # the resume file is removed once saved

    def no_training(*_args, **_kwargs):
        raise AssertionError("should have loaded the cached model")

    monkeypatch.setattr(DCLGANTrainer, "fit", no_training)
    again = train_or_load(a, b, s, cfg)
    assert again.key == first.key
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(first.critic(x), again.critic(x))
    with pytest.raises(AssertionError):  # a different domain B is a different model
        train_or_load(a, _images(4, 9), s, cfg)


def test_read_critic_outputs(tmp_path):
    s = DCLGANSettings(**TINY, epochs=1)
    model = DCLGAN(s)
    images = _images(5, 5)
    r = read_critic(model.D_A, images, s, "cpu", grid=2, batch_size=2)
    c = model.D_A.block_channels
    assert r.logit.shape == (5,)
    assert r.pooled.shape == (5, 2 * (c["block3"] + c["block4"]))
    assert r.grid.shape == (5, (c["block3"] + c["block4"]) * 4) and r.grid_sizes == [c["block3"] * 4, c["block4"] * 4]
    assert set(r.mean_maps) == {"block3", "block4"} and r.mean_maps["block4"].shape[0] == c["block4"]


def test_critic_extractor_and_generic_nearest(tmp_path):
    from synthleak.data.layout import AuditData
    from synthleak.methods import run_method

    cfg = MethodConfig(image_size=32, base_filters=4, epochs=1, batch_size=4, cache_dir=str(tmp_path), quiet=True,
                       feature_space="dclgan-critic", options={"resnet_blocks": "2", "nce_patches": "16"})
    ext = CriticExtractor(cfg)
    assert ext.trainable and ext.name == "dclgan-critic"
    with pytest.raises(SynthleakError, match="fit"):
        ext.transform(_images(2, 0))
    ext.fit(_images(8, 6))
    feats = ext.extract(_images(3, 7))
    assert feats.shape == (3, 2 * (16 + 32)) and feats.dtype == np.float32
    assert len(ext.feature_names()) == feats.shape[1]
    assert np.allclose(feats, ext.transform(_images(3, 7)), atol=1e-5)

    data = AuditData(generated=_images(8, 6), real_unknown=_images(4, 8))
    result = run_method("nearest", data, cfg)
    assert result.test_scores.shape == (4,) and np.all(np.isfinite(result.test_scores))
    assert "dclgan-critic feature model" in result.trained_on
