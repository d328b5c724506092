"""seed-dclgan end to end on tiny phantoms (epochs=1, 32 px, 4 base filters), honesty of its choices."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthleak.attacks.knn import NeighbourIndex
from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.data.layout import AuditData
from synthleak.errors import SynthleakError
from synthleak.methods import run_method, seed_dclgan
from synthleak.methods.context import labelled_folds

TINY_OPTIONS = {"resnet_blocks": "2", "nce_patches": "16", "overlap_grid": "2"}


def _phantoms(n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:256, :256]
    out = []
    for _ in range(n):
        img = np.full((256, 256), 30.0)
        for _ in range(2):  # two "lungs" of random size and place
            cy, cx = rng.uniform(70, 186, 2)
            ry, rx = rng.uniform(25, 60, 2)
            img += 120 * ((((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) < 1)
        out.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def phantom_data() -> AuditData:
    """Members are copied (with noise) into the generated set; non-members are not."""
    rng = np.random.default_rng(0)
    members, non_members, unknown = _phantoms(8, rng), _phantoms(8, rng), _phantoms(6, rng)
    copies = np.concatenate([members, members, unknown[:3]])
    generated = np.clip(copies + rng.normal(0, 6, copies.shape), 0, 255).astype(np.uint8)
    return AuditData(
        generated=ImageSet.from_arrays(generated, [f"g{i}" for i in range(len(generated))]),
        real_used=ImageSet.from_arrays(members, [f"u{i}" for i in range(8)]),
        real_not_used=ImageSet.from_arrays(non_members, [f"n{i}" for i in range(8)]),
        real_unknown=ImageSet.from_arrays(unknown, [f"t{i}" for i in range(6)]),
    )


def _cfg(tmp_path, **kw) -> MethodConfig:
    options = {**TINY_OPTIONS, **kw.pop("options", {})}
    return MethodConfig(image_size=32, base_filters=4, epochs=1, batch_size=4, n_folds=2, quiet=True,
                        cache_dir=str(tmp_path / "cache"), options=options, **kw)


def test_end_to_end_halves(phantom_data, tmp_path):
    cfg = _cfg(tmp_path, artifacts_dir=tmp_path / "art")
    result = run_method("seed-dclgan", phantom_data, cfg)
    assert result.test_scores.shape == (6,) and result.labelled_scores.shape == (16,)
    assert np.all(np.isfinite(result.test_scores)) and np.all(np.isfinite(result.labelled_scores))
    assert set(result.variants) == {"critic", "overlap", "features", "critic_nearest"}
    for sig in result.variants.values():
        assert sig.labelled.shape == (16,) and sig.test.shape == (6,)
    assert "two seeded halves" in result.trained_on["dclgan"]
    assert any(n.startswith("main score:") for n in result.notes)
    # the copied unknowns should overlap more with their generated copies than the others
    overlap = result.variants["overlap"].test
    assert overlap[:3].mean() > overlap[3:].mean()
    assert len(result.artifacts) == 3 and all(p.exists() and p.suffix == ".png" for p in result.artifacts)
    assert result.neighbours.shape == (6, 1)

    again = run_method("seed-dclgan", phantom_data, _cfg(tmp_path))  # cached model, same seed -> same scores
    assert np.allclose(again.test_scores, result.test_scores)
    assert again.artifacts == []  # no artifacts_dir, no PNGs


def test_without_labelled_reals_uses_overlap(phantom_data, tmp_path):
    data = AuditData(generated=phantom_data.generated, real_unknown=phantom_data.real_unknown)
    result = run_method("seed-dclgan", data, _cfg(tmp_path))
    assert result.labelled_scores is None
    assert np.array_equal(result.test_scores, result.variants["overlap"].test)
    assert set(result.variants) == {"critic", "overlap", "critic_nearest"}
    assert any("no labelled reals" in n for n in result.notes)


def test_real_not_used_domain_is_cross_fitted(phantom_data, tmp_path, monkeypatch):
    seen_b: list[set[str]] = []
    real_train = seed_dclgan.train_or_load

    def recording(domain_a, domain_b, settings, cfg, tag=""):
        seen_b.append(set(domain_b.ids))
        return real_train(domain_a, domain_b, settings, cfg, tag)

    monkeypatch.setattr(seed_dclgan, "train_or_load", recording)
    cfg = _cfg(tmp_path, options={"dclgan_domain": "real_not_used"})
    result = run_method("seed-dclgan", phantom_data, cfg)
    images, y = phantom_data.labelled()
    folds = labelled_folds(phantom_data, cfg)
    assert len(seen_b) == len(folds) == 2
    for (train_idx, val_idx), b_ids in zip(folds, seen_b):
        # each fold's GAN saw only that fold's training non-members, never a scored row
        assert b_ids == {images.ids[i] for i in train_idx if y[i] == 0}
        assert not b_ids & {images.ids[i] for i in val_idx}
    assert "cross-fitted" in result.trained_on["dclgan"]
    assert result.test_scores.shape == (6,) and np.all(np.isfinite(result.labelled_scores))


def test_bad_options_raise_one_line_errors(phantom_data, tmp_path):
    with pytest.raises(SynthleakError, match="dclgan_domain"):
        run_method("seed-dclgan", phantom_data, _cfg(tmp_path, options={"dclgan_domain": "bogus"}))
    with pytest.raises(SynthleakError, match="overlap_grid"):
        run_method("seed-dclgan", phantom_data, _cfg(tmp_path, options={"overlap_grid": "0"}))
    data = AuditData(generated=phantom_data.generated, real_unknown=phantom_data.real_unknown)
    with pytest.raises(SynthleakError, match="labelled"):
        run_method("seed-dclgan", data, _cfg(tmp_path, options={"dclgan_domain": "real_not_used"}))


class _ToyAudit:
    """The part of an audit context ScoringMethod.run reads: the data's flags, labels, folds, the index factory."""

    def __init__(self, y, folds):
        self.y, self._folds = y, folds
        self.data = SimpleNamespace(has_labelled=True, labelled_groups=lambda: None)

    def folds(self, cfg=None):
        return self._folds

    def index(self, database):
        return NeighbourIndex(database)


def test_choice_is_nested_and_picks_the_informative_signal():
    """The method's own fit / score under ScoringMethod.run's cross-fitting, on given critic signals."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    informative = y + rng.normal(0, 0.5, 60)
    x_labelled, x_test = rng.normal(size=(60, 5)), rng.normal(size=(10, 5))
    readouts = SimpleNamespace(labelled=SimpleNamespace(pooled=x_labelled), test=SimpleNamespace(pooled=x_test))
    signals = seed_dclgan.SignalSet(
        labelled={"critic": rng.normal(size=60), "overlap": informative, "critic_nearest": rng.normal(size=60)},
        test={"critic": rng.normal(size=10), "overlap": np.arange(10.0), "critic_nearest": rng.normal(size=10)},
        features_for_fold=lambda k: (x_labelled, x_test), neighbours=None, saliency_model=readouts)

    class Toy(seed_dclgan.SeedDCLGAN):
        def prepare(self, audit):
            self.domain, self.synthetic_images = "halves", None
            return self.keep_signals(audit, signals, {})

        def notes(self, embedding):
            return []

    from synthleak.decide import cv_folds

    folds = cv_folds(y, None, 5, 0)
    method = Toy(MethodConfig(n_folds=3))
    result = method.run(_ToyAudit(y, folds))
    assert method.chosen == "overlap" and method.per_fold == ["overlap"] * 5
    assert roc_auc_score(y, result.labelled_scores) > 0.8
    # held-out rows are z-scored against their training rows: the test ranking is unchanged
    assert np.all(np.diff(result.test_scores) > 0)
    # (c) is honest too: each fold's rows scored by a classifier fitted on the other folds only
    for k, (train, val) in enumerate(folds):
        model = seed_dclgan.make_classifier(MethodConfig())().fit(x_labelled[train], y[train])
        np.testing.assert_allclose(result.variants["features"].labelled[val], model.predict_proba(x_labelled[val])[:, 1])


def test_overlap_and_spatial_overlap_helpers():
    from synthleak.features.dclgan import CriticReadout

    rng = np.random.default_rng(1)
    syn_grid = rng.normal(size=(5, 12)).astype(np.float32)
    syn = CriticReadout(np.zeros(5), np.zeros((5, 2), np.float32), syn_grid, [4, 8], {})
    queries = CriticReadout(np.zeros(2), np.zeros((2, 2), np.float32), syn_grid[[3, 1]] + 1e-3, [4, 8], {})
    sim, idx = seed_dclgan.overlap_scores(queries, syn)
    assert list(idx) == [3, 1] and np.allclose(sim, 1.0, atol=1e-3)
    sim_self, idx_self = seed_dclgan.overlap_scores(syn, syn, exclude_self=True)
    assert np.all(idx_self != np.arange(5)) and np.all(sim_self < 1.0)
    a = rng.normal(size=(4, 3, 3))
    assert np.allclose(seed_dclgan.spatial_overlap(a, a), 1.0)
    assert np.allclose(seed_dclgan.spatial_overlap(a, -a), -1.0)


def test_tiny_challenge_end_to_end(tmp_path, request):
    pytest.importorskip("synthleak.bench.build")
    data = request.getfixturevalue("tiny_audit_data")
    result = run_method("seed-dclgan", data, _cfg(tmp_path))
    assert result.test_scores.shape == (len(data.real_unknown),)
    assert result.labelled_scores.shape == (len(data.labelled()[1]),)
