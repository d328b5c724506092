"""The memorisation meter of a built benchmark: how much its generator copies, measured with the truth.

Unlike an audit, the builder knows the whole member list, so it can say directly how close the
synthetic images sit to the training set. Every distance is Euclidean between pixel vectors at the
generator's training resolution (intensities in [0, 1]), where the generator did its copying.

- `memorised_share` (Gu et al. 2023, via synthleak.leakage): share of synthetic images whose nearest
  member is closer than 1/3 of the distance to the second nearest member of *another* group (slices
  of one patient are near-duplicates and count as one).
- `member_closer_share`: share of synthetic images nearer to some member than to any non-member,
  with the larger side randomly subsampled (seeded) to the size of the smaller, so that a generator
  that learnt only the population, with nothing of its members, scores 0.5 (ties count one half).
  With patient groups the subsample takes whole patients, as the member split does: a few member
  patients against the same number of images from many non-member patients would not be a fair
  race (the more varied set lies nearer to a poor sample by its variety alone).
- the audit view (`rung_audit`): test AUC of the `nearest` method in the same pixel space, with its
  patient-bootstrap CI, and the real-only control (which never sees a synthetic image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..attacks.knn import NeighbourIndex
from ..leakage import memorised_share
from .build import split_by_count
from .generator import resize_stack


def pixel_vectors(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 [n, H, W] -> float32 [n, side * side] in [0, 1] (area-downsampled when larger)."""
    small = images if images.shape[1] == side else resize_stack(images, side)
    return small.reshape(len(small), -1).astype(np.float32) / 255.0


def _subsample(rows: np.ndarray, groups: np.ndarray | None, size: int, rng: np.random.Generator) -> np.ndarray:
    """About `size` rows, seeded: whole groups when groups are given (as the member split draws them)."""
    if len(rows) <= size:
        return rows
    if groups is None:
        return rows[np.sort(rng.choice(len(rows), size, replace=False))]
    return rows[split_by_count(np.asarray(groups), size, rng)]


def member_closer_share(members: np.ndarray, nonmembers: np.ndarray, synthetic: np.ndarray, seed: int = 0,
                        member_groups: np.ndarray | None = None,
                        nonmember_groups: np.ndarray | None = None) -> float:
    """Share of synthetic rows nearer to their nearest member than to their nearest non-member.

    Feature arrays [n, d]. The two reference sets are made equally large (a seeded random subsample
    of the larger one, of whole groups when its groups are given), so chance is 0.5; ties count one half.
    """
    rng = np.random.default_rng(seed)
    size = min(len(members), len(nonmembers))
    members = _subsample(members, member_groups, size, rng)
    nonmembers = _subsample(nonmembers, nonmember_groups, size, rng)
    d_member = NeighbourIndex(members).search(synthetic, 1)[0][:, 0]
    d_nonmember = NeighbourIndex(nonmembers).search(synthetic, 1)[0][:, 0]
    return float(np.mean((d_member < d_nonmember) + 0.5 * (d_member == d_nonmember)))


def memorisation_meter(members: np.ndarray, member_groups: np.ndarray, nonmembers: np.ndarray,
                       synthetic: np.ndarray, side: int, seed: int = 0,
                       nonmember_groups: np.ndarray | None = None) -> dict:
    """The two copying statistics for uint8 image stacks, compared at `side` x `side` pixels."""
    m, s = pixel_vectors(members, side), pixel_vectors(synthetic, side)
    return {
        "memorised_share": memorised_share(m, s, member_groups=np.asarray(member_groups)),
        "member_closer_share": member_closer_share(m, pixel_vectors(nonmembers, side), s, seed=seed,
                                                   member_groups=member_groups, nonmember_groups=nonmember_groups),
        "meter_pixels": side,
    }


def _metric(metric) -> dict | None:
    if metric is None:
        return None
    return {"value": metric.value, "low": metric.low, "high": metric.high}


def rung_audit(folder: Path, side: int, seed: int = 0, n_boot: int = 1000) -> dict:
    """The pixel `nearest` attack and the real-only control on a built benchmark, scored with its labels
    (`side` x `side` pixels; CIs by patient bootstrap from its groups.csv)."""
    from ..config import MethodConfig
    from ..pipeline import run_audit

    folder = Path(folder)
    cfg = MethodConfig(seed=seed, quiet=True, cache_dir="none", options={"pixel_side": str(side)})
    # the dataset-level verdict would run the default recipe too: not part of the meter
    report = run_audit(folder, methods="nearest", cfg=cfg, labels=folder / "test_labels.csv",
                       groups=folder / "groups.csv", n_boot=n_boot, with_verdict=False)
    nearest, control = report.by_name("nearest").succeeded(), report.control
    out = {"nearest_test_auc": _metric(nearest.test["auc"]),
           "nearest_test_tpr@1%fpr": _metric(nearest.test["tpr@1%fpr"])}
    if control is not None and control.test is not None:
        out["control_test_auc"] = _metric(control.test["auc"])
        out["control_cv_auc"] = _metric(control.cv["auc"]) if control.cv else None
    return out
