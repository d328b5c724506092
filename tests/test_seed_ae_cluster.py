"""Clustering methods (seed-ae-kmeans / -gmm / -spectral): mapping rule, honesty, end to end."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthleak.config import MethodConfig
from synthleak.data.images import ImageSet
from synthleak.data.layout import AuditData
from synthleak.errors import SynthleakError
from synthleak.methods import run_method
from synthleak.methods.seed_ae_cluster import (
    Clustering,
    cluster_scores,
    rbf_kernel_median,
    synthetic_proximity,
    used_shares,
)


def test_used_shares_are_smoothed_toward_the_base_rate():
    assign = np.array([0, 0, 1, 1, 1])
    y = np.array([1, 1, 0, 0, 1])
    shares = used_shares(assign, y, 3)  # cluster 2 holds no labelled reals
    np.testing.assert_allclose(shares, [(2 + 0.6) / 3, (1 + 0.6) / 4, 0.6])


def test_two_clusters_higher_share_is_used_and_score_is_signed_affinity():
    affinity = np.array([[-1.0, -3.0], [-2.5, -0.5]])  # e.g. minus distances to two centres
    cl = Clustering(np.array([0, 1]), affinity, np.full((2, 2), 0.5))
    rows = np.arange(2)
    np.testing.assert_allclose(cluster_scores(cl, rows, np.array([0.7, 0.3])), [2.0, -2.0])
    np.testing.assert_allclose(cluster_scores(cl, rows, np.array([0.3, 0.7])), [-2.0, 2.0])


def test_more_clusters_score_is_membership_weighted_share():
    membership = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.2, 0.0, 0.8]])
    cl = Clustering(np.array([0, 1, 2]), np.log(membership + 1e-9), membership)
    values = np.array([0.9, 0.5, 0.1])
    np.testing.assert_allclose(cluster_scores(cl, np.arange(3), values), [0.9, 0.3, 0.26])


def test_without_labels_the_cluster_nearest_the_synthetic_centroid_is_used():
    x = np.r_[np.zeros((5, 2)), np.full((5, 2), 10.0)]
    assign = np.r_[np.zeros(5, int), np.ones(5, int)]
    synthetic = np.full((3, 2), 9.0)
    values = synthetic_proximity(x, assign, synthetic, 2)
    assert np.argmax(values) == 1
    cl = Clustering(assign, -np.c_[np.abs(x[:, 0] - 0), np.abs(x[:, 0] - 10)], np.eye(2)[assign])
    scores = cluster_scores(cl, np.arange(10), values)
    assert (scores[5:] > scores[:5].max()).all()


def test_rbf_kernel_is_scale_free():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 50))
    np.testing.assert_allclose(rbf_kernel_median(x), rbf_kernel_median(x * 1000.0), rtol=1e-6)
    assert np.allclose(np.diag(rbf_kernel_median(x)), 1.0)


def _blob_data(rng: np.random.Generator, swap: tuple[int, int] | None = None, labelled: bool = True) -> AuditData:
    """Two image 'styles' (dark / bright); used reals mostly bright. Features = pixels32."""
    def imgs(levels):
        return np.stack([np.full((256, 256), lv, np.uint8) + rng.integers(0, 6, (256, 256)).astype(np.uint8)
                         for lv in levels])

    used = imgs([170] * 14 + [60] * 2)
    not_used = imgs([60] * 13 + [170] * 3)
    if swap is not None:
        i, j = swap
        used[i], not_used[j] = not_used[j].copy(), used[i].copy()
    unknown = imgs([170] * 6 + [60] * 6)
    generated = imgs([175] * 10)
    mk = ImageSet.from_arrays
    return AuditData(generated=mk(generated, [f"g{i}" for i in range(10)]),
                     real_used=mk(used, [f"u{i}" for i in range(16)]) if labelled else None,
                     real_not_used=mk(not_used, [f"n{i}" for i in range(16)]) if labelled else None,
                     real_unknown=mk(unknown, [f"t{i}" for i in range(12)]))


def _pixel_cfg(**options) -> MethodConfig:
    return MethodConfig(seed=0, quiet=True, cache_dir="none", n_folds=4, options={"features": "pixels32", **options})


@pytest.mark.parametrize("algo", ["kmeans", "gmm", "spectral"])
def test_separable_styles_give_high_auc(algo):
    data = _blob_data(np.random.default_rng(0))
    res = run_method(f"seed-ae-{algo}", data, _pixel_cfg(pca="5"))
    y = data.labelled()[1]
    assert res.labelled_scores.shape == (32,) and res.test_scores.shape == (12,)
    assert roc_auc_score(y, res.labelled_scores) > 0.75
    assert (res.test_scores[:6].min() > res.test_scores[6:].max())  # bright unknowns score higher
    assert set(res.variants) == {"kmeans", "gmm", "spectral"} - {algo}
    assert "cluster->label mapping" in res.trained_on


def test_a_held_out_label_never_changes_its_own_score():
    """Swap a used and a not-used image that share a validation fold: labels (y), folds and the
    other folds stay the same, so the two rows' out-of-fold scores must simply trade places."""
    from synthleak.methods.context import labelled_folds

    cfg = _pixel_cfg()
    base_data = _blob_data(np.random.default_rng(1))
    folds = labelled_folds(base_data, cfg)
    val = folds[0][1]
    i = int(next(r for r in val if r < 16))  # a used row
    j = int(next(r for r in val if r >= 16))  # a not-used row
    base = run_method("seed-ae-kmeans", base_data, cfg)
    swapped = run_method("seed-ae-kmeans", _blob_data(np.random.default_rng(1), swap=(i, j - 16)), cfg)
    assert swapped.labelled_scores[i] == pytest.approx(base.labelled_scores[j])
    assert swapped.labelled_scores[j] == pytest.approx(base.labelled_scores[i])


def test_no_labels_uses_the_synthetic_centroid():
    data = _blob_data(np.random.default_rng(2), labelled=False)
    res = run_method("seed-ae-kmeans", data, _pixel_cfg())
    assert res.labelled_scores is None
    assert res.test_scores[:6].min() > res.test_scores[6:].max()  # bright = near the bright generated images
    assert "synthetic centroid" in res.trained_on["cluster->label mapping"]


def test_more_than_two_clusters_and_bad_options():
    data = _blob_data(np.random.default_rng(3))
    res = run_method("seed-ae-spectral", data, MethodConfig(seed=0, quiet=True, cache_dir="none", clusters=3,
                                                            n_folds=4, options={"features": "pixels32"}))
    assert np.isfinite(res.labelled_scores).all() and np.isfinite(res.test_scores).all()
    assert ((res.test_scores >= 0) & (res.test_scores <= 1)).all()  # membership-weighted shares
    with pytest.raises(SynthleakError, match="--clusters"):
        run_method("seed-ae-kmeans", data, MethodConfig(quiet=True, cache_dir="none", clusters=1,
                                                        options={"features": "pixels32"}))
    with pytest.raises(SynthleakError, match="gmm_cov"):
        run_method("seed-ae-gmm", data, _pixel_cfg(gmm_cov="weird"))


@pytest.mark.parametrize("setting", [{"clusters": "99"}, {"pca": "-1"}, {"gmm_cov": "weird"}, {"affinity": "cosine"}])
def test_bad_settings_are_refused_before_any_feature_model_trains(setting, monkeypatch):
    """Whatever algorithm runs, a bad clustering setting is a one-line error before the (trained) embedding."""
    from synthleak.methods.context import AuditContext

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded before the settings were checked")

    monkeypatch.setattr(AuditContext, "embedding", no_embedding)
    with pytest.raises(SynthleakError, match=next(iter(setting))):
        run_method("seed-ae-kmeans", _blob_data(np.random.default_rng(0)), _pixel_cfg(**setting))


def test_settings_of_algorithms_that_do_not_run_are_not_checked():
    """Without the variants only the chosen algorithm runs: another algorithm's setting is not read."""
    res = run_method("seed-ae-kmeans", _blob_data(np.random.default_rng(0)), _pixel_cfg(variants="0", gmm_cov="x"))
    assert res.variants == {} and np.isfinite(res.test_scores).all()


def test_end_to_end_with_the_conv_res_ae(tiny_audit_data):
    cfg = MethodConfig(seed=0, quiet=True, epochs=1, image_size=16, batch_size=16)
    results = {m: run_method(m, tiny_audit_data, cfg) for m in ("seed-ae-spectral", "seed-ae-kmeans")}
    n_lab = len(tiny_audit_data.labelled()[1])
    for res in results.values():
        assert res.test_scores.shape == (len(tiny_audit_data.real_unknown),)
        assert res.labelled_scores.shape == (n_lab,) and np.isfinite(res.labelled_scores).all()
        assert "conv-res-ae feature model" in res.trained_on
    # the spectral run's KMeans variant equals the KMeans method (same cached features, same seed)
    np.testing.assert_allclose(results["seed-ae-spectral"].variants["kmeans"].test,
                               results["seed-ae-kmeans"].test_scores)
    again = run_method("seed-ae-gmm", tiny_audit_data, cfg)
    np.testing.assert_allclose(again.variants["spectral"].test, results["seed-ae-spectral"].test_scores)
