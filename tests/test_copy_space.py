"""Copy-detection feature space: NT-Xent, the near-copy augmentation, cached / seeded / resumable
training of the contrastive encoder, and the extractor (unit-norm features that find near-copies)."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from synthleak.bench.phantoms import make_phantoms
from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.errors import CheckpointError, SynthleakError
from synthleak.features import get_extractor
from synthleak.features.copy import CopyExtractor, CopySettings, load_copy_encoder, train_copy_encoder
from synthleak.models.augment import copy_augment
from synthleak.models.checkpoint import save_checkpoint
from synthleak.models.contrastive import CopyEncoder, embed_images, nt_xent

from helpers import interrupt_training


def _cfg(tmp_path: Path, **kw) -> MethodConfig:
    base = dict(epochs=1, image_size=32, base_filters=4, batch_size=6, quiet=True, cache_dir=str(tmp_path / "cache"),
                options={"copy_depth": "resnet10"})
    base.update(kw)
    return MethodConfig(**base)


def _phantoms(n: int, seed: int = 0) -> ImageSet:
    images, _ = make_phantoms(n, 1, seed=seed)  # one slice per patient: every image is its own anatomy
    return ImageSet.from_arrays(images)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------ NT-Xent

def test_nt_xent_matches_hand_computed_values():
    # two pairs of identical unit vectors, orthogonal across pairs, temperature 0.5: every row sees
    # its partner at cosine 1 and two negatives at cosine 0 -> -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert float(nt_xent(z, 0.5)) == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)
    # rows 0,1 pair with rows 2,3; cosines: 0-1 0, 0-2 0.6, 0-3 0.8, 1-2 0.8, 1-3 0.6, 2-3 0.96; temperature 1
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    e = math.exp
    rows = [-0.6 + math.log(e(0) + e(0.6) + e(0.8)),     # row 0, partner row 2
            -0.6 + math.log(e(0) + e(0.8) + e(0.6)),     # row 1, partner row 3
            -0.6 + math.log(e(0.6) + e(0.8) + e(0.96)),  # row 2, partner row 0
            -0.6 + math.log(e(0.8) + e(0.6) + e(0.96))]  # row 3, partner row 1
    assert float(nt_xent(z, 1.0)) == pytest.approx(sum(rows) / 4, rel=1e-6)
    assert float(nt_xent(3 * z, 1.0)) == pytest.approx(sum(rows) / 4, rel=1e-6)  # only directions count
    assert float(nt_xent(z[[0, 2]], 0.1)) == pytest.approx(0.0, abs=1e-6)  # one pair: no negatives


def test_nt_xent_rejects_bad_input():
    with pytest.raises(SynthleakError, match="pairs"):
        nt_xent(torch.ones(3, 2))
    with pytest.raises(SynthleakError, match="temperature"):
        nt_xent(torch.ones(4, 2), 0.0)


# ------------------------------------------------------------------------------------- augmentation

def test_copy_augment_keeps_shape_and_range_and_is_seeded():
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    a = copy_augment(x, torch.Generator().manual_seed(1))
    b = copy_augment(x, torch.Generator().manual_seed(1))
    c = copy_augment(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_copy_augment_with_everything_off_but_the_flip_mirrors():
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    still = dict(degrees=0.0, shift=0.0, scale=(1.0, 1.0), contrast=(1.0, 1.0), brightness=0.0, noise=0.0, blur=0.0)
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(copy_augment(x, gen, flip=1.0, **still), x.flip(-1), atol=1e-6)
    assert torch.allclose(copy_augment(x, gen, flip=0.0, **still), x, atol=1e-6)


# ------------------------------------------------------------------------------------ the encoder

def test_encoder_shapes_and_unit_norm_embeddings():
    torch.manual_seed(0)
    model = CopyEncoder(image_size=32, base_filters=4, depth="resnet10", projection_dim=8).eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (3, 8)
        emb = model.embed(x)
    assert emb.shape == (3, 32) and torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    feats = embed_images(model, _phantoms(2).pixels, "cpu")  # 256 px images are resized to 32
    assert feats.shape == (2, 32) and feats.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)


def test_training_is_cached_and_deterministic(tmp_path):
    images = _phantoms(8)
    model, meta = train_copy_encoder(images, _cfg(tmp_path))
    files = list((tmp_path / "cache" / "models" / "copy-encoder").glob("*.safetensors"))
    assert len(files) == 1 and not list(files[0].parent.glob("*.partial"))
    assert meta["n_images"] == 8 and np.isfinite(meta["final_nt_xent"]) and meta["seconds_per_epoch"] > 0
    again, meta2 = train_copy_encoder(images, _cfg(tmp_path))  # loaded from the cache
    assert _same_weights(model, again) and meta2["key"] == meta["key"]
    fresh, _ = train_copy_encoder(images, _cfg(tmp_path, cache_dir="none"))  # same seed, trained again
    assert _same_weights(model, fresh)
    other, _ = train_copy_encoder(images, _cfg(tmp_path, cache_dir="none", seed=1))
    assert not _same_weights(model, other)


def test_training_resumes_after_interruption_to_identical_weights(tmp_path, monkeypatch):
    images = _phantoms(8)
    full, _ = train_copy_encoder(images, _cfg(tmp_path / "a", epochs=3))
    calls = interrupt_training(monkeypatch, at_call=3)
    with pytest.raises(KeyboardInterrupt):
        train_copy_encoder(images, _cfg(tmp_path / "b", epochs=3))
    assert len(list((tmp_path / "b" / "cache" / "models" / "copy-encoder").glob("*.partial"))) == 1
    torch.manual_seed(99)  # whatever ran in between must not matter
    resumed, _ = train_copy_encoder(images, _cfg(tmp_path / "b", epochs=3))
    assert calls == [0, 1, 2, 2]  # epochs 0 and 1 were not repeated
    assert _same_weights(full, resumed)


# ----------------------------------------------------------------------------------- the extractor

def test_extractor_is_registered_cached_and_loads_weights(tmp_path):
    cfg = _cfg(tmp_path)
    ext = get_extractor("copy", cfg)
    assert isinstance(ext, CopyExtractor) and ext.trainable and not ext.scale
    with pytest.raises(SynthleakError, match="fit"):
        ext.transform(_phantoms(2))
    ext.fit(_phantoms(8))
    feats = ext.extract(_phantoms(3, seed=5))
    assert feats.shape == (3, 32) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    assert len(ext.feature_names()) == 32
    path = tmp_path / "enc.safetensors"
    save_checkpoint(path, ext.model.state_dict(), ext.meta)
    loaded = CopyExtractor(_cfg(tmp_path, weights=str(path), epochs=50)).fit(_phantoms(2))  # no training
    assert _same_weights(ext.model, loaded.model) and loaded.cache_key() == ext.cache_key()
    save_checkpoint(tmp_path / "other.safetensors", ext.model.state_dict(), {"arch": "resnet-ae"})
    with pytest.raises(CheckpointError, match="not a copy-encoder checkpoint"):
        load_copy_encoder(tmp_path / "other.safetensors")


def test_default_epochs_show_a_fixed_number_of_pairs():
    auto = CopySettings.from_config(MethodConfig())
    assert (auto.image_size, auto.depth, auto.base_filters, auto.batch_size, auto.epochs) == (64, "resnet10", 16, 128, None)
    assert auto.epochs_for(3000) == 10 and auto.epochs_for(1000) == 30 and auto.epochs_for(7) == 200
    assert CopySettings.from_config(MethodConfig(epochs=3)).epochs_for(1000) == 3


@pytest.mark.parametrize("kw, match", [(dict(image_size=16), "image-size"), (dict(batch_size=1), "batch-size"),
                                       (dict(options={"copy_depth": "resnet50"}), "copy_depth"),
                                       (dict(options={"copy_temperature": "0"}), "positive")])
def test_bad_settings_are_user_errors(kw, match):
    with pytest.raises(SynthleakError, match=match):
        CopySettings.from_config(MethodConfig(**kw))


def _light_copy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 3-pixel shift and a little noise: what a generator that memorised the image might emit."""
    dx, dy = rng.integers(-3, 4, 2)
    moved = cv2.warpAffine(img.astype(np.float32), np.float32([[1, 0, dx], [0, 1, dy]]), img.shape[::-1],
                           borderMode=cv2.BORDER_REFLECT)
    return np.clip(moved + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def _copy_margins(ext: CopyExtractor, originals: ImageSet, copies: ImageSet) -> tuple[float, float]:
    """(share of copies whose most similar original is their source, median of the similarity to the
    source minus the similarity to the most similar other original)."""
    sim = ext.extract(copies) @ ext.extract(originals).T  # cosine similarity: features are unit vectors
    others = np.where(np.eye(len(sim), dtype=bool), -np.inf, sim).max(1)
    return float((sim.argmax(1) == np.arange(len(sim))).mean()), float(np.median(np.diag(sim) - others))


@pytest.mark.parametrize("seed", [0, 1])
def test_trained_encoder_puts_a_near_copy_nearest_to_its_source(tmp_path, seed):
    originals = _phantoms(24, seed=3)
    rng = np.random.default_rng(seed)
    copies = ImageSet.from_arrays(np.stack([_light_copy(p, rng) for p in originals.pixels]))
    options = {"copy_depth": "resnet10", "copy_lr": "3e-3"}
    cfg = _cfg(tmp_path, epochs=40, base_filters=8, batch_size=12, cache_dir="none", seed=seed, options=options)
    top1, margin = _copy_margins(CopyExtractor(cfg).fit(originals), originals, copies)
    _, untrained_margin = _copy_margins(CopyExtractor(replace(cfg, epochs=0)).fit(originals), originals, copies)
    assert top1 >= 0.9
    # an untrained network maps all slices to nearly one direction; training opens the gap between a
    # copy's source and every other image
    assert margin > untrained_margin + 0.05


def test_nearest_in_copy_space(tiny_audit_data, tmp_path):
    from synthleak.methods import run_method

    result = run_method("nearest", tiny_audit_data, _cfg(tmp_path, feature_space="copy"))
    assert result.test_scores.shape == (len(tiny_audit_data.real_unknown),)
    assert np.isfinite(result.test_scores).all() and np.isfinite(result.labelled_scores).all()
    assert result.trained_on["copy feature model"].startswith("train/generated")
