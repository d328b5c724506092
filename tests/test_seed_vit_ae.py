"""seed-vit-ae / seed-vit-ae-recon end to end, and CT pre-training feeding the autoencoder's encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from synthleak.config import MethodConfig, PretrainConfig
from synthleak.errors import CheckpointError, SynthleakError
from synthleak.features.vit_ae import ViTAESettings, build_autoencoder
from synthleak.methods import run_method
from synthleak.methods.seed_vit_ae import make_chooser


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One model cache for the module: later tests reuse the autoencoder the first one trained."""
    return tmp_path_factory.mktemp("vit-cache")


def _cfg(tmp_path, **kw) -> MethodConfig:
    # ViT input 64 (16 tokens) keeps the test fast; the recipe's default is 224.
    base = dict(vit_size="tiny", image_size=64, epochs=1, batch_size=8, n_folds=3, quiet=True,
                cache_dir=str(tmp_path / "cache"), options={"latent": "32", "rf_trees": "20"})
    base.update(kw)
    return MethodConfig(**base)


def test_both_variants_end_to_end(tiny_audit_data, shared_cache):
    data = tiny_audit_data
    tmp_path = shared_cache
    cfg = _cfg(tmp_path)
    clf = run_method("seed-vit-ae", data, cfg)
    images, y = data.labelled()
    assert clf.test_scores.shape == (len(data.real_unknown),)
    assert clf.labelled_scores.shape == (len(y),)
    assert ((clf.test_scores >= 0) & (clf.test_scores <= 1)).all()  # P(used)
    assert {"logreg", "random-forest", "recon", "recon-error"} <= set(clf.variants)
    assert np.allclose(clf.variants["recon"].test, -clf.variants["recon-error"].test)
    assert "train/generated" in clf.trained_on["vit autoencoder"]
    assert "labelled reals" in clf.trained_on["classifier"]
    assert any("inner CV chose" in n for n in clf.notes)

    # Same model (cached), the reconstruction decision: score = minus the error, not fitted on labels.
    recon = run_method("seed-vit-ae-recon", data, cfg)
    assert np.allclose(recon.test_scores, clf.variants["recon"].test)
    assert np.allclose(recon.labelled_scores, clf.variants["recon"].labelled)
    assert (recon.test_scores < 0).all()
    assert np.allclose(recon.variants["classifier"].test, clf.test_scores)
    assert recon.trained_on["vit autoencoder"] == clf.trained_on["vit autoencoder"]

    flipped = run_method("seed-vit-ae-recon", data, _cfg(tmp_path, options={"latent": "32", "rf_trees": "20", "recon_sign": "higher"}))
    assert np.allclose(flipped.test_scores, -recon.test_scores)
    with pytest.raises(SynthleakError, match="recon_sign"):
        run_method("seed-vit-ae-recon", data, _cfg(tmp_path, options={"latent": "32", "recon_sign": "auto"}))


def test_vit_ae_is_a_feature_space_for_nearest(tiny_audit_data, shared_cache):
    result = run_method("nearest", tiny_audit_data, _cfg(shared_cache, feature_space="vit-ae"))
    assert result.test_scores.shape == (len(tiny_audit_data.real_unknown),)
    assert np.isfinite(result.test_scores).all() and (result.test_scores <= 0).all()
    assert "vit-ae feature model" in result.trained_on


def test_classifier_choice_happens_inside_training_rows_only():
    """The chooser sees only what it is fitted on: nested CV keeps outer folds honest."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = (x[:, 0] > 0).astype(int)
    chooser = make_chooser(seed=0, inner_folds=3).fit(x[:30], y[:30])
    assert len(chooser.cv_results_["params"]) == 4  # three logistic regressions + one forest
    assert chooser.predict_proba(x[30:]).shape == (10, 2)
    assert chooser.best_score_ > 0.8


def _class_folders(root, per_class: int = 6):
    rng = np.random.default_rng(0)
    for c, level in (("a", 60), ("b", 180)):
        for split in ("train", "valid"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                img = np.clip(rng.normal(level, 20, (256, 256)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{c}{i}.png")


def test_ct_pretrained_encoder_initialises_the_autoencoder(tmp_path):
    from synthleak.features.pretrain import run_pretrain

    _class_folders(tmp_path / "ct")
    out = tmp_path / "vit.safetensors"
    run_pretrain(PretrainConfig(data=tmp_path / "ct", arch="vit", out=out, epochs=1, batch_size=4,
                                image_size=32, vit_size="tiny", quiet=True))
    from synthleak.models.checkpoint import load_checkpoint

    state, meta = load_checkpoint(out)
    assert meta["encoder_meta"]["vit_size"] == "tiny"

    cfg = MethodConfig(vit_size="tiny", image_size=32, encoder=str(out), cache_dir="none", quiet=True)
    model, init = build_autoencoder(ViTAESettings.from_config(cfg))
    assert "pretrain checkpoint" in init
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, state["encoder." + key]), key

    wrong = MethodConfig(vit_size="small", image_size=32, encoder=str(out), cache_dir="none", quiet=True)
    with pytest.raises(CheckpointError, match="--vit-size tiny"):
        build_autoencoder(ViTAESettings.from_config(wrong))


@pytest.mark.slow
def test_recipe_defaults_end_to_end(tiny_audit_data, tmp_path):
    """The recipe as the CLI runs it (ViT input 224, latent 512), one epoch of ViT-Ti/16."""
    cfg = MethodConfig(vit_size="tiny", epochs=1, n_folds=3, quiet=True, cache_dir=str(tmp_path))
    result = run_method("seed-vit-ae-recon", tiny_audit_data, cfg)
    assert result.test_scores.shape == (len(tiny_audit_data.real_unknown),)
    assert np.isfinite(result.variants["classifier"].labelled).all()
