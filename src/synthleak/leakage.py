"""The dataset-level leakage verdict and the copy finder: pure functions on score and feature arrays.

**The verdict** answers one question with one test: do the labelled members (label 1, `real_used`)
score higher than the labelled non-members (label 0, `real_not_used`)? The statistic is the
Mann-Whitney U, reported as its AUC form U / (n1 n0) (the chance that a member outscores a
non-member, ties counting one half; 0.5 = no difference). Its one-sided p-value comes from random
relabellings: p = (1 + #{relabelled AUC >= observed AUC}) / (1 + permutations), so p is never below
1 / (1 + permutations) and is valid for any number of permutations. The relabelling is valid because
the scores are label-free (the caller guarantees that no score was fitted on these labels). With
`groups` (patients) whole groups are relabelled: neighbouring slices of one patient are not
independent, and relabelling them one by one would read a patient effect as membership
(anti-conservative; see benchmarks/results/verdict-stats.md). Every group must then carry one label.

`leakage_shown` means p < alpha for that one test. **"Not shown" is absence of evidence, not proof
of privacy**: it says this test, with these scores and this many labelled reals, did not separate
members from non-members; a better attack, more labelled reals or other synthetic images may.

**Descriptive statistics** (no test; computed when feature arrays of the synthetic images, the
labelled members and the labelled non-members are given; distances are Euclidean, through
`synthleak.attacks.knn.NeighbourIndex`). "Training set" below means the labelled members.

- `copy_share` (Dar et al. 2024, memorization-ldm): the copy threshold is the 95th percentile, over
  members, of the similarity between a member and its nearest non-member (how close two different
  real patients' images get); a synthetic image whose similarity to its nearest member exceeds it is
  a *copy* of that member. Higher = more copying. Similarity = 1 - d^2 / 2 for Euclidean distance d:
  the cosine similarity when features are L2-normalised (and the Pearson correlation Dar et al. use
  when they are also centred), a decreasing function of distance otherwise; d = sqrt(2 (1 - s)).
  Its 95% CI is a percentile bootstrap over synthetic images with the threshold held fixed.
  With `copy_reference="both"` (what the audit uses) a copy must also beat a second anchor: the 95th
  percentile of the synthetic images' own similarity to their nearest non-member (non-members
  subsampled to the members' count). Dar's anchor alone says "closer than two real patients get";
  in raw pixel spaces a blurry generator that never saw a member is closer to *every* real image than
  two sharp reals are, and would be called a copier. The second anchor asks "closer to a training
  image than the generator comes to held-out images", which blur cannot fake; with a copying
  generator the copies stand out against both.
- `ct` (Meehan, Chaudhuri, Dasgupta, AISTATS 2020, the C_T data-copying test): PCA to 64 dimensions
  (fitted on the members, when wider), k-means with 3 cells on the members; in each cell a
  Mann-Whitney U between the distances from synthetic images and from non-members to their nearest
  member of that cell, Z-scored; Z averaged with the cells' non-member shares as weights, over the
  cells holding more than 20 synthetic images. C_T << 0: synthetic images sit closer to the
  training set than fresh reals do (copying); ~0: as close as fresh reals; >> 0: farther
  (underfitting).
- `authenticity` (Alaa et al., ICML 2022): a synthetic image is inauthentic when its distance to its
  nearest member is at most that member's distance to its own nearest other member. The share of
  authentic synthetic images; lower = more copying.
- `memorised_share` (Gu et al. 2023): a synthetic image is memorised when its nearest member is
  closer than 1/3 of the distance to the second nearest. Higher = more copying.

With `member_groups`, "other member" (authenticity) and "second nearest" (Gu) must belong to another
group than the member in question: near-duplicate neighbouring slices of one patient count as one.

- `member_closer` (the share of synthetic images nearer a labelled member than any labelled
  non-member, equal-size sets; chance 0.5; higher = the generator reproduces its training patients'
  anatomy), with a bootstrap CI and a relabelling p-value: see `member_closer` for its definition,
  why the subsampling is averaged in closed form, and the test.

All of these are relative to the *labelled* members, usually a sample of the generator's training set:
a copy of a training image that is not among them is not found, and a member's nearest other member
lies farther than it would in the full training set. Read them as descriptions of these images, not
estimates for the whole training set.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .attacks.knn import NeighbourIndex
from .errors import SynthleakError
from .mapped import row_blocks, take_rows

MIN_PERMUTATIONS = 100
#: relabelled statistics within this of the observed one count as ties (>=): float noise only makes p larger
_TIE_TOLERANCE = 1e-12
#: label-matrix entries per permutation block (a few MB of float64)
_BLOCK_ENTRIES = 1_000_000


# ---------------------------------------------------------------- input checks

def _float_vector(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise SynthleakError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise SynthleakError(f"{name}: {len(bad)} value(s) are NaN or infinite (first at position {bad[0]})")
    return arr


def _label_vector(labels, n: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise SynthleakError(f"labels: {arr.size} labels for {n} scores; give one 0/1 label per score")
    if not np.isin(arr, (0, 1)).all():
        raise SynthleakError("labels: every label must be 0 (non-member) or 1 (member)")
    return arr.astype(int)


def _group_codes(groups, n: int, name: str) -> np.ndarray:
    """Integer codes of the groups (compared as strings), checked against the row count."""
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) != n:
        raise SynthleakError(f"{name}: {arr.size} entries for {n} rows; give one group per row")
    return np.unique(arr.astype(str), return_inverse=True)[1]


def _feature_matrix(values, name: str, min_rows: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise SynthleakError(f"{name}: expected a 2-D [n, d] array, got shape {arr.shape}")
    if len(arr) < min_rows:
        raise SynthleakError(f"{name}: {len(arr)} row(s); at least {min_rows} needed")
    # row blocks read from the file: a streamed synthetic matrix is memory-mapped, and a whole-matrix
    # mask (or the map's pages left resident) would cost its size again
    if not all(np.isfinite(block).all() for _, block in row_blocks(arr)):
        raise SynthleakError(f"{name}: contains NaN or infinite values")
    return arr


def _same_width(**arrays: np.ndarray) -> None:
    widths = {name: a.shape[1] for name, a in arrays.items()}
    if len(set(widths.values())) > 1:
        raise SynthleakError("feature arrays differ in width: "
                             + ", ".join(f"{k} {v}" for k, v in widths.items()))


def _ids(ids, n: int, name: str) -> list[str]:
    if ids is None:
        return [str(i) for i in range(n)]
    out = [str(i) for i in ids]
    if len(out) != n:
        raise SynthleakError(f"{name}: {len(out)} ids for {n} feature rows")
    return out


def _check_permutations(permutations: int) -> None:
    if int(permutations) != permutations or permutations < MIN_PERMUTATIONS:
        raise SynthleakError(f"permutations {permutations}: must be an integer of at least {MIN_PERMUTATIONS}")


def _check_alpha(alpha: float, permutations: int) -> None:
    if not 0 < alpha < 1:
        raise SynthleakError(f"alpha {alpha:g}: must be between 0 and 1 (exclusive)")
    _check_permutations(permutations)
    if 1 / (1 + permutations) >= alpha:
        needed = int(np.floor(1 / alpha))
        while 1 / (1 + needed) >= alpha:
            needed += 1
        raise SynthleakError(f"permutations {permutations}: the smallest possible p-value 1/(1+{permutations}) "
                             f"is not below alpha {alpha:g}; use at least {needed}")


# ---------------------------------------------------------------- the test

@dataclass(frozen=True)
class PermutationTest:
    """One-sided Mann-Whitney test (members score higher) with a relabelling p-value."""

    auc: float  #: U / (n1 n0) observed: P(member score > non-member score), ties 1/2
    p_value: float
    permutations: int
    units: int  #: exchangeable units relabelled: groups when given, else images
    grouped: bool

    def describe(self) -> str:
        unit = "groups" if self.grouped else "images"
        return (f"one-sided Mann-Whitney U (members score higher than non-members), p from "
                f"{self.permutations} random relabellings of {self.units} {unit}")


def _unit_labels(labels: np.ndarray, codes: np.ndarray, groups) -> np.ndarray:
    """One label per group; a group holding both labels is a user error (it cannot be relabelled whole)."""
    counts = np.bincount(codes)
    members = np.bincount(codes, weights=labels)
    mixed = np.flatnonzero((members > 0) & (members < counts))
    if len(mixed):
        names = np.unique(np.asarray(groups).astype(str))[mixed]
        shown = ", ".join(repr(g) for g in names[:3]) + (" ..." if len(names) > 3 else "")
        raise SynthleakError(f"groups: {len(mixed)} group(s) hold both members and non-members ({shown}); "
                             "every group (patient) must carry one label")
    return (members > 0).astype(float)


def permutation_test(scores, labels, *, groups=None, permutations: int = 2000, seed: int = 0) -> PermutationTest:
    """Test that members (label 1) score higher than non-members (label 0).

    Ranks are computed once (mid-ranks for ties); a relabelling only changes which ranks are summed,
    so each block of relabellings is one matrix product. With `groups`, group labels are permuted and
    each group brings all its images' ranks along, so the number of member images may change between
    relabellings: that is why the statistic is the AUC form U / (n1 n0) rather than U itself.

    `scores` may be a matrix [n, c] of c label-free scores (a recipe's candidates): the statistic is
    then the largest of their AUCs, in the observed labelling and in every relabelling alike, so the
    test stays exact although the best candidate is picked after looking at the labels.
    """
    from scipy.stats import rankdata

    matrix = np.asarray(scores, dtype=float)
    columns = [matrix[:, j] for j in range(matrix.shape[1])] if matrix.ndim == 2 else [matrix]
    columns = [_float_vector(c, "scores") for c in columns]
    scores = columns[0]
    labels = _label_vector(labels, len(scores))
    _check_permutations(permutations)
    if groups is None:
        codes = np.arange(len(scores))
        unit_label = labels.astype(float)
    else:
        codes = _group_codes(groups, len(scores), "groups")
        unit_label = _unit_labels(labels, codes, groups)
    unit_kind = "groups" if groups is not None else "images"
    for value, name in ((1, "members"), (0, "non-members")):
        if (unit_label == value).sum() < 2:
            raise SynthleakError(f"labels: fewer than 2 {name} ({unit_kind}); the test needs at least 2 of each")

    rank_sum = np.column_stack([np.bincount(codes, weights=rankdata(c)) for c in columns])
    size = np.bincount(codes).astype(float)
    n = len(scores)

    def auc(member_rank_sum, n_members):
        """Largest AUC over the columns, per labelling (member_rank_sum: [..., c], n_members: [...])."""
        n_members = np.asarray(n_members)[..., None]
        u = member_rank_sum - n_members * (n_members + 1) / 2
        return (u / (n_members * (n - n_members))).max(-1)

    observed = float(auc(unit_label @ rank_sum, unit_label @ size))
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // len(unit_label))
    at_least = 0
    for start in range(0, permutations, block):
        relabelled = rng.permuted(np.broadcast_to(unit_label, (min(block, permutations - start), len(unit_label))),
                                  axis=1)
        stats = auc(relabelled @ rank_sum, relabelled @ size)
        at_least += int((stats >= observed - _TIE_TOLERANCE).sum())
    return PermutationTest(auc=observed, p_value=(1 + at_least) / (1 + permutations),
                           permutations=int(permutations), units=len(unit_label), grouped=groups is not None)


# ---------------------------------------------------------------- descriptive statistics

def similarity(distance: np.ndarray) -> np.ndarray:
    """1 - d^2/2: the cosine similarity of L2-normalised features; decreasing in distance always."""
    return 1.0 - np.square(distance) / 2.0


def _nearest_outside(index: NeighbourIndex, queries: np.ndarray, query_keys: np.ndarray,
                     db_keys: np.ndarray) -> np.ndarray:
    """Distance from each query to its nearest database row whose key differs from the query's key.

    Keys are row numbers (skip one's own row) or group codes (skip one's own patient). k grows until
    every query has found an outside row, so a patient with many near-identical slices costs only a
    wider search for the queries that need it.
    """
    out = np.full(len(queries), np.inf)
    todo = np.arange(len(queries))
    k = min(len(db_keys), 8)
    while len(todo):
        # every query in the first round: search the (possibly memory-mapped) matrix itself, not a copy
        dist, idx = index.search(queries if len(todo) == len(queries) else queries[todo], k)
        outside = db_keys[idx] != query_keys[todo, None]
        found = outside.any(axis=1)
        first = outside.argmax(axis=1)
        out[todo[found]] = dist[found, first[found]]
        todo = todo[~found]
        if k == len(db_keys):
            break
        k = min(len(db_keys), k * 4)
    return out


def _nearest_members(members, synthetic, member_groups):
    """Checked inputs and each synthetic image's nearest member: (index over members, member keys,
    synthetic, distance [m], member row [m]). Keys are group codes, or row numbers without groups."""
    members = _feature_matrix(members, "member_features", 2)
    synthetic = _feature_matrix(synthetic, "synthetic_features", 1)
    _same_width(member_features=members, synthetic_features=synthetic)
    if member_groups is None:
        keys = np.arange(len(members))
    else:
        keys = _group_codes(member_groups, len(members), "member_groups")
        if keys.max() < 1:
            raise SynthleakError("member_groups: all members are in one group; need at least 2 groups")
    index = NeighbourIndex(members)
    dist, nearest = index.search(synthetic, 1)
    return index, keys, synthetic, dist[:, 0], nearest[:, 0]


def authenticity(members, synthetic, *, member_groups=None) -> float:
    """Share of synthetic images that are authentic (Alaa et al. 2022); lower = more copying.

    A synthetic image x with nearest member t is inauthentic when d(x, t) <= d(t, nearest other
    member of t) (ties count as inauthentic, so an exact copy of a duplicated member is caught).
    With `member_groups`, t's nearest other member must come from another group.
    """
    index, keys, synthetic, d_syn, nearest = _nearest_members(members, synthetic, member_groups)
    d_member = _nearest_outside(index, index.database, keys, keys)
    return float(np.mean(d_syn > d_member[nearest]))


def memorised_share(members, synthetic, *, member_groups=None, ratio: float = 1 / 3) -> float:
    """Share of synthetic images memorised in Gu et al.'s sense (2023); higher = more copying.

    x is memorised when d(x, nearest member) < ratio * d(x, second nearest member), with the second
    nearest taken from another group than the nearest when `member_groups` are given.
    """
    index, keys, synthetic, d_first, nearest = _nearest_members(members, synthetic, member_groups)
    d_second = _nearest_outside(index, synthetic, keys[nearest], keys)
    return float(np.mean(d_first < ratio * d_second))


def _project(pca, features: np.ndarray) -> np.ndarray:
    """PCA scores, computed block by block (no centred copy of a memory-mapped matrix); features hold at
    least one row."""
    return np.concatenate([pca.transform(block).astype(np.float32) for _, block in row_blocks(features)])


def data_copying_ct(members, nonmembers, synthetic, *, cells: int = 3, min_synthetic: int = 20,
                    pca_dims: int = 64, seed: int = 0) -> float:
    """Meehan et al.'s C_T (2020): << 0 copying, ~0 like fresh reals, >> 0 underfitting.

    Members are the training set T, non-members the held-out reals P, synthetic images Q. A cell
    enters when it holds more than `min_synthetic` synthetic images (dgm-eval's tau = 20/m) and at
    least one non-member (a cell without one has weight 0). Within a cell, U counts the
    (synthetic, non-member) pairs where the synthetic image is the farther one from the cell's
    members (ties 1/2), Z = (U - mn/2) / sqrt(mn(m+n+1)/12) as in the paper (no continuity
    correction: the reference code's +0.5 is a p-value device, not part of the statistic).
    Raises SynthleakError when no cell qualifies.
    """
    from scipy.stats import rankdata
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    members = _feature_matrix(members, "member_features", 1)
    if len(members) < cells:
        raise SynthleakError(f"C_T: {len(members)} members cannot fill {cells} k-means cells")
    nonmembers = _feature_matrix(nonmembers, "nonmember_features", 1)
    synthetic = _feature_matrix(synthetic, "synthetic_features", 1)
    _same_width(member_features=members, nonmember_features=nonmembers, synthetic_features=synthetic)
    if members.shape[1] > pca_dims:
        pca = PCA(n_components=min(pca_dims, len(members)), random_state=seed).fit(members)
        members, nonmembers, synthetic = (_project(pca, a) for a in (members, nonmembers, synthetic))
    kmeans = KMeans(n_clusters=cells, n_init=10, random_state=seed).fit(members)
    cell_t, cell_p, cell_q = kmeans.labels_, kmeans.predict(nonmembers), kmeans.predict(synthetic)
    z_scores, weights = [], []
    for c in range(cells):
        p, q = nonmembers[cell_p == c], synthetic[cell_q == c]
        if len(q) <= min_synthetic or len(p) == 0:
            continue
        index = NeighbourIndex(members[cell_t == c])
        d_q = index.search(q, 1)[0][:, 0]
        d_p = index.search(p, 1)[0][:, 0]
        m, n = len(q), len(p)
        u = rankdata(np.r_[d_q, d_p])[:m].sum() - m * (m + 1) / 2
        z_scores.append((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))
        weights.append(n / len(nonmembers))
    if not z_scores:
        raise SynthleakError(f"C_T: none of the {cells} cells holds more than {min_synthetic} synthetic images "
                             "and a non-member")
    return float(np.dot(weights, z_scores) / np.sum(weights))


@dataclass(frozen=True)
class CopyRow:
    """A synthetic image judged a copy of a labelled member (similarity = 1 - d^2/2).

    The similarity's value depends on the feature space (negative for distances above sqrt(2)); the two
    readings after it do not: `percentile` = the percent of members whose similarity to their nearest
    non-member (two different patients' images) is below this copy's, and `distance_ratio` = the
    copy's distance to its member over the median member-to-nearest-non-member distance (0 = identical,
    1 = as far apart as two patients' images typically are).
    """

    synthetic_id: str
    real_id: str
    similarity: float
    percentile: float | None = None
    distance_ratio: float | None = None


@dataclass(frozen=True)
class CopyFinding:
    threshold: float  #: similarity above which a synthetic image is a copy
    share: float  #: share of synthetic images that are copies
    ci: tuple[float, float]  #: 95% percentile bootstrap over synthetic images, threshold fixed
    rows: list[CopyRow]  #: the copies, most similar first


COPY_REFERENCES = ("held-out", "both")


def find_copies(members, nonmembers, synthetic, *, synthetic_ids: Sequence | None = None,
                member_ids: Sequence | None = None, quantile: float = 0.95, bootstraps: int = 2000,
                seed: int = 0, copy_reference: str = "held-out") -> CopyFinding:
    """Dar et al.'s copy finder with their threshold (see the module docstring).

    The threshold is numpy's (linearly interpolated) `quantile` of the members' nearest-non-member
    similarities. A bootstrap resample of m synthetic images holds Binomial(m, share) copies, so the
    bootstrap is drawn from that distribution directly (exactly the resampling distribution, O(1) per
    draw). With no copies the interval is [0, 0]: read it beside the number of synthetic images.
    """
    members = _feature_matrix(members, "member_features", 1)
    nonmembers = _feature_matrix(nonmembers, "nonmember_features", 1)
    synthetic = _feature_matrix(synthetic, "synthetic_features", 1)
    _same_width(member_features=members, nonmember_features=nonmembers, synthetic_features=synthetic)
    syn_ids = _ids(synthetic_ids, len(synthetic), "synthetic_ids")
    mem_ids = _ids(member_ids, len(members), "member_ids")
    if copy_reference not in COPY_REFERENCES:
        raise SynthleakError(f"copy_reference {copy_reference!r}: choose from {', '.join(COPY_REFERENCES)}")
    pair_distance = NeighbourIndex(nonmembers).search(members, 1)[0][:, 0]
    real_pair = similarity(pair_distance)
    threshold = float(np.quantile(real_pair, quantile))
    if copy_reference == "both":
        rng = np.random.default_rng(seed)
        pool = nonmembers[rng.choice(len(nonmembers), min(len(members), len(nonmembers)), replace=False)]
        synthetic_pair = similarity(NeighbourIndex(pool).search(synthetic, 1)[0][:, 0])
        threshold = max(threshold, float(np.quantile(synthetic_pair, quantile)))
    dist, nearest = NeighbourIndex(members).search(synthetic, 1)
    sim = similarity(dist[:, 0])
    is_copy = sim > threshold
    share = float(is_copy.mean())
    draws = np.random.default_rng(seed).binomial(len(synthetic), share, bootstraps) / len(synthetic)
    low, high = np.percentile(draws, [2.5, 97.5])
    flagged = np.flatnonzero(is_copy)
    order = flagged[np.lexsort((flagged, -sim[flagged]))]  # most similar first, then by row
    pair_median = float(np.median(pair_distance))
    rows = [CopyRow(syn_ids[i], mem_ids[nearest[i, 0]], float(sim[i]),
                    percentile=float(100 * np.mean(real_pair < sim[i])),
                    distance_ratio=float(dist[i, 0] / pair_median) if pair_median > 0 else None) for i in order]
    return CopyFinding(threshold, share, (float(low), float(high)), rows)


# ---------------------------------------------------------------- member-closer

#: synthetic images (a seeded sample) in the member-closer test; the share and its CI use every one
MEMBER_CLOSER_SAMPLE = 2000
#: relabellings behind the member-closer p-value (at most; fewer when the verdict is given fewer)
MEMBER_CLOSER_PERMUTATIONS = 500
#: bootstrap resamples of the synthetic images behind its CI
MEMBER_CLOSER_BOOTSTRAPS = 1000
#: above this many synthetic images the CI is the normal interval of their mean (the bootstrap's limit)
_BOOTSTRAP_MAX_ROWS = 20_000
#: synthetic rows per block of the distance computation ([rows, labelled reals] float32 tiles)
_DISTANCE_ROWS = 4096
#: at most this many (sample rows x labelled reals) entries in the test's ranked sample
_SAMPLE_ENTRIES = 4_000_000


@dataclass(frozen=True)
class MemberCloser:
    """The member-closer statistic (see `member_closer`)."""

    share: float  #: over every synthetic image; 0.5 = chance (equal-size sets), higher = more reproduction
    ci: tuple[float, float]  #: 95% bootstrap over synthetic images, these labelled reals fixed
    p_value: float  #: (1 + #{relabelled share >= observed}) / (1 + permutations), on the test's sample
    permutations: int
    subsample: int  #: units (groups, or images) on each side of a comparison: min(members, non-members)
    sample: int  #: synthetic images in the test's seeded sample
    units: int  #: exchangeable units relabelled: groups when given, else images
    grouped: bool

    def describe(self) -> str:
        unit = "groups" if self.grouped else "images"
        return (f"share of synthetic images nearer a labelled member than any labelled non-member, both sides "
                f"subsampled to {self.subsample} {unit} (averaged over every subsample; chance 0.5); p from "
                f"{self.permutations} relabellings of {self.units} {unit} on {self.sample} synthetic images")


def _none_drawn(total: int, k: int) -> np.ndarray:
    """keep[b] = C(total - b, k) / C(total, k) for b = 0..total: the chance that a uniform draw of k of
    `total` items misses b given items (0 once b > total - k); a running product, one term per item."""
    i = np.arange(total, dtype=float)
    ratio = np.clip((total - k - i) / (total - i), 0.0, None)
    return np.r_[1.0, np.cumprod(ratio)]


class _Distances:
    """Squared Euclidean distances from synthetic rows to every labelled real, block by block.

    Each relabelling picks its own columns, so the statistic needs *every* synthetic-to-labelled-real
    distance, not a nearest neighbour: NeighbourIndex would have to return k = all rows and re-rank all
    of them exactly in float64 (d times the cost of one GEMM; a float64 GEMM alone made a 7,000 x 700
    audit at 64x64 px cost about 4 s). Here: one float32 GEMM per block of synthetic rows (read from
    their file when memory-mapped, never copied whole), on coordinates centred on the reals' mean so
    that the expanded form keeps most of float32's precision. Two reals whose distances to one synthetic
    image differ by less than that rounding (about 1e-6 relative) are ordered by it: it moves a share
    by a negligible amount, and since the test reuses the same distances for every relabelling its
    validity does not depend on it. Duplicate real rows are computed once and shared, so identical
    reals get identical distances: an exact tie between a member and a non-member counts one half (and
    so does a tie between different reals when the features lie on a coarse grid, see __init__).
    """

    def __init__(self, reals: np.ndarray, units: np.ndarray | None = None):
        unique, columns = np.unique(np.asarray(reals, dtype=np.float32), axis=0, return_inverse=True)
        self.columns = np.asarray(columns).ravel()
        # with `units` (a code per real, e.g. its patient), a unit's distance is its nearest real's
        self.units = None
        if units is not None and len(np.unique(units)) < len(units):
            order = np.argsort(units, kind="stable")
            self.columns = self.columns[order]
            self.units = np.flatnonzero(np.r_[True, np.diff(np.asarray(units)[order]) != 0])
        # the mean, rounded to a power-of-two grid well below the data's spread: centring just as well, and
        # data on a coarse grid (integers, k/256) keep exact products, so their exact ties stay ties
        spread = float(unique.std(0, dtype=np.float64).mean())
        step = 2.0 ** np.floor(np.log2(spread / 16)) if spread > 0 else 1.0
        self.centre = np.round(unique.mean(0, dtype=np.float64) / step) * step
        self.reals = (unique - self.centre).astype(np.float32)
        self.norms = np.einsum("ij,ij->i", self.reals, self.reals, dtype=np.float64).astype(np.float32)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        q = (np.asarray(rows, dtype=np.float64) - self.centre).astype(np.float32)
        d2 = self.reals @ q.T  # [reals, rows]
        d2 *= -2.0
        d2 += self.norms[:, None]
        d2 += np.einsum("ij,ij->i", q, q, dtype=np.float64).astype(np.float32)[None, :]
        np.maximum(d2, 0.0, out=d2)
        d2 = np.ascontiguousarray(d2.T)[:, self.columns]
        return d2 if self.units is None else np.minimum.reduceat(d2, self.units, axis=1)


def _direct_shares(d2: np.ndarray, is_member: np.ndarray, keep: np.ndarray, members_small: bool) -> np.ndarray:
    """Per synthetic row, the member-closer share averaged over every equal-size subsample (see
    `member_closer`), from its squared distances to all labelled reals [rows, reals]."""
    small, large = (is_member, ~is_member) if members_small else (~is_member, is_member)
    nearest_small = d2[:, small].min(1, keepdims=True)
    other = d2[:, large]
    before = (other < nearest_small).sum(1)
    through = (other <= nearest_small).sum(1)
    small_wins = 0.5 * (keep[before] + keep[through])
    return small_wins if members_small else 1.0 - small_wins


class _RankedSample:
    """The test's synthetic rows with their labelled reals ranked by distance, for fast relabelling.

    rank_min[j, s] = number of reals strictly nearer synthetic row s than real j (the start of j's tie
    block in s's order), rank_max[j, s] = the number at most as near (the end of that block). A
    relabelling's statistic is then a minimum over the smaller side's rows of rank_min (stored real-major,
    so gathering them copies whole rows): no distance is looked at again.
    """

    def __init__(self, d2: np.ndarray):
        n_rows, n_reals = d2.shape
        order = np.argsort(d2, axis=1, kind="stable")
        ordered = np.take_along_axis(d2, order, 1)
        starts = np.ones((n_rows, n_reals), bool)
        starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        del ordered
        position = np.broadcast_to(np.arange(n_reals), (n_rows, n_reals))
        block_start = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
        ends = np.ones((n_rows, n_reals), bool)  # position p ends a block when p + 1 starts one
        ends[:, :-1] = starts[:, 1:]
        block_end = np.minimum.accumulate(np.where(ends, position + 1, n_reals)[:, ::-1], axis=1)[:, ::-1]
        self.ties = bool((~starts).any())
        dtype = np.int16 if n_reals < np.iinfo(np.int16).max else np.int32
        self.rows = n_rows
        self.rank_min = np.empty((n_reals, n_rows), dtype)
        self.rank_max = np.empty((n_reals, n_rows), dtype)
        index = np.arange(n_rows)[:, None]
        self.rank_min.T[index, order] = block_start
        self.rank_max.T[index, order] = block_end

    def share(self, is_member: np.ndarray) -> float:
        """The sample's mean share for one labelling (see `_direct_shares`, of which this is the same
        number computed from ranks)."""
        m = int(is_member.sum())
        n = len(is_member) - m
        members_small = m <= n
        small = np.flatnonzero(is_member if members_small else ~is_member)
        keep = _none_drawn(n if members_small else m, len(small))
        starts = self.rank_min[small]
        before = starts.min(0).astype(np.int64)  # every real nearer than the nearest small-side one is large-side
        through = before
        if self.ties:  # large-side reals tied with the nearest small-side one
            through = self.rank_max[small].min(0) - (starts == before).sum(0)
        small_wins = 0.5 * (keep[before] + keep[through])
        return float(np.mean(small_wins if members_small else 1.0 - small_wins))


def _mean_ci(values: np.ndarray, bootstraps: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile bootstrap of the mean of `values` (the normal interval for very many values)."""
    if len(values) > _BOOTSTRAP_MAX_ROWS:
        half = 1.959964 * float(np.std(values)) / np.sqrt(len(values))
        mean = float(np.mean(values))
        return mean - half, mean + half
    block = max(1, 2_000_000 // len(values))
    draws = np.concatenate([values[rng.integers(0, len(values), (min(block, bootstraps - b), len(values)))].mean(1)
                            for b in range(0, bootstraps, block)])
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def member_closer(members, nonmembers, synthetic, *, member_groups=None, nonmember_groups=None,
                  permutations: int = MEMBER_CLOSER_PERMUTATIONS, bootstraps: int = MEMBER_CLOSER_BOOTSTRAPS,
                  sample: int = MEMBER_CLOSER_SAMPLE, seed: int = 0) -> MemberCloser:
    """Share of synthetic images nearer (Euclidean, in these features) a labelled member than any
    labelled non-member, with equal-size sets; 0.5 = chance, higher = the generator reproduces its
    training patients more closely than held-out ones. Ties count one half.

    **Equal sizes, in units.** The units are the groups (patients) when groups are given, else the
    images; a unit's distance to a synthetic image is its nearest image's. With m member units and n
    non-member units, a synthetic image near nobody in particular is nearer the larger set by its size
    alone, so both sides are subsampled to k = min(m, n) units. Whole groups, not images: 10 member
    images of 3 patients against 10 non-member images of 10 patients is not a fair race either (the more
    varied set lies nearer a poorly matched synthetic image by its variety alone; on a DDPM benchmark
    whose 10 labelled members came from 3 patients, image-level subsampling gave 0.14, far below
    chance), while two random sets of k patients are exchangeable, so chance is exactly 0.5.
    Instead of averaging a few random subsamples (R seeded repeats), the share is their exact average
    over *every* pair of subsamples, in closed form: when m <= n all k member units are drawn, and a
    synthetic image whose nearest member unit has b non-member units strictly nearer and e tied with it
    counts 0.5 * (C(n-b, k) + C(n-b-e, k)) / C(n, k) (the chance that no nearer non-member unit is
    drawn, ties one half); when m > n the same from the other side. That is the R -> infinity limit of
    the repeats: no Monte-Carlo noise, no seed in the share, and no more costly than one repeat.

    **The test** (one-sided): relabel the labelled reals at random, whole groups when groups are
    given (slices of one patient are not exchangeable one by one), recompute the share, p = (1 +
    #{relabelled share >= observed}) / (1 + permutations). The statistic is the share on a seeded
    sample of at most `sample` synthetic images (all of them when fewer; fewer when the labelled units
    are very many), whose distances to every labelled unit are computed once and ranked once: a
    relabelling then costs one minimum over the smaller side's rows of ranks (500 relabellings of 700
    reals: well under a second).

    **The CI** is a percentile bootstrap over the synthetic images, these labelled reals fixed: how
    precisely these synthetic images measure the share against *these* reals. Which reals happen to be
    labelled matters more, and is what the p-value's relabelling addresses; resampling the reals was
    tried and rejected: with replacement, a third of the members drop out of each resample, copies of
    them stop counting, and the interval fell below the observed share (0.59-0.71 around 0.73 on a
    copying generator).

    Feature arrays [rows, d] (same width): `synthetic` may be a memory map of millions of rows (read
    block by block; per image only its share is kept). `member_groups` / `nonmember_groups` give the
    groups of the two labelled sets (a group on both sides is an error); without them images are units.
    """
    members = _feature_matrix(members, "member_features", 1)
    nonmembers = _feature_matrix(nonmembers, "nonmember_features", 1)
    synthetic = _feature_matrix(synthetic, "synthetic_features", 1)
    _same_width(member_features=members, nonmember_features=nonmembers, synthetic_features=synthetic)
    _check_permutations(permutations)
    m, n = len(members), len(nonmembers)
    is_member = np.r_[np.ones(m, bool), np.zeros(n, bool)]
    grouped = member_groups is not None or nonmember_groups is not None
    names = [np.asarray(g).astype(str) if g is not None else None for g in (member_groups, nonmember_groups)]
    for arr, size, what in ((names[0], m, "member_groups"), (names[1], n, "nonmember_groups")):
        if arr is not None and (arr.ndim != 1 or len(arr) != size):
            raise SynthleakError(f"{what}: {arr.size} entries for {size} rows; give one group per row")
    if names[0] is not None and names[1] is not None:
        shared = sorted(set(names[0]) & set(names[1]))
        if shared:
            raise SynthleakError(f"groups: {len(shared)} group(s) hold both members and non-members "
                                 f"({', '.join(repr(g) for g in shared[:3])}); every group must carry one label")
    # one unit per group (or per image without groups); codes number the units, members' first
    member_codes = np.unique(names[0], return_inverse=True)[1].ravel() if names[0] is not None else np.arange(m)
    nonmember_codes = np.unique(names[1], return_inverse=True)[1].ravel() if names[1] is not None else np.arange(n)
    codes = np.r_[member_codes, member_codes.max() + 1 + nonmember_codes]
    unit_member = np.bincount(codes, weights=is_member) > 0
    if unit_member.sum() < 2 or (~unit_member).sum() < 2:
        unit = "groups" if grouped else "images"
        raise SynthleakError(f"member-closer: fewer than 2 member or non-member {unit}; needs at least 2 of each")

    # from here on the units are the items: a unit's distance is its nearest image's (codes are sorted
    # units, members' first, so unit_member is True for the first units)
    distances = _Distances(np.concatenate([members, nonmembers]), codes)
    is_member = unit_member
    m, n = int(unit_member.sum()), int((~unit_member).sum())
    keep = _none_drawn(max(m, n), min(m, n))
    rng = np.random.default_rng([seed, 7])
    # the ranked sample holds two int arrays of [sample, units]: fewer rows when the units are many
    sample = max(1, min(sample, max(256, _SAMPLE_ENTRIES // (m + n))))
    picked = np.sort(rng.choice(len(synthetic), sample, replace=False)) if len(synthetic) > sample else None
    shares = np.empty(len(synthetic))
    kept = []  # the distances of every row, when every row is in the sample
    for start, block in row_blocks(synthetic, _DISTANCE_ROWS * synthetic.shape[1] * synthetic.dtype.itemsize):
        d2 = distances(block)
        shares[start:start + len(block)] = _direct_shares(d2, is_member, keep, m <= n)
        if picked is None:
            kept.append(d2)
    ranked = _RankedSample(np.concatenate(kept) if picked is None else distances(take_rows(synthetic, picked)))
    del kept
    observed = ranked.share(is_member)

    at_least = 0
    for _ in range(permutations):
        at_least += ranked.share(rng.permutation(unit_member)) >= observed - _TIE_TOLERANCE
    low, high = _mean_ci(shares, bootstraps, rng)
    return MemberCloser(share=float(shares.mean()), ci=(max(0.0, low), min(1.0, high)),
                        p_value=(1 + at_least) / (1 + permutations), permutations=int(permutations),
                        subsample=min(m, n), sample=ranked.rows, units=len(unit_member), grouped=grouped)


# ---------------------------------------------------------------- the verdict

def format_p(p: float, alpha: float | None = None) -> str:
    """Two significant digits in plain decimals (never 'p < x': the permutation floor stays visible),
    with more digits when rounding would put the shown value on the other side of alpha."""
    decimals = max(2, 1 - int(np.floor(np.log10(p))))
    while True:
        text = f"{p:.{decimals}f}"
        if alpha is None or (float(text) < alpha) == (p < alpha) or decimals >= 8:
            break
        decimals += 1
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass
class Verdict:
    """Dataset-level verdict (see the module docstring for each field's definition and direction).

    Descriptive fields are None when the feature arrays were not given, or (C_T) when not
    computable; `notes` says why.
    """

    leakage_shown: bool  #: p_value < alpha
    p_value: float  #: (1 + #{relabelled AUC >= observed}) / (1 + permutations)
    alpha: float
    test: str  #: what was tested, in words
    permutations: int
    auc: float  #: the observed statistic: P(member score > non-member score), ties 1/2; 0.5 = chance
    n_members: int  #: labelled images with label 1
    n_nonmembers: int
    copy_share: float | None = None  #: share of synthetic images that copy a labelled member (higher = worse)
    copy_share_ci: tuple[float, float] | None = None  #: 95% bootstrap CI over synthetic images
    copy_threshold: float | None = None  #: similarity (1 - d^2/2) above which a synthetic image is a copy
    ct: float | None = None  #: Meehan's C_T: << 0 copying, ~0 like fresh reals, >> 0 underfitting
    authenticity: float | None = None  #: share of authentic synthetic images (lower = worse)
    memorised_share: float | None = None  #: Gu et al.'s memorised share (higher = worse)
    #: share of synthetic images nearer a labelled member than any labelled non-member, equal-size sets
    #: (0.5 = chance, higher = worse), its 95% bootstrap CI over synthetic images and relabelling p-value
    member_closer_share: float | None = None
    member_closer_ci: tuple[float, float] | None = None
    member_closer_p: float | None = None
    member_closer_test: str | None = None  #: how the member-closer p was computed, in words
    #: the same statistics for the labelled non-members in place of synthetic images: what a generator
    #: that copies nothing (one that samples fresh patients) gets on these data
    authenticity_held_out: float | None = None
    memorised_share_held_out: float | None = None
    copies: list[CopyRow] = field(default_factory=list)  #: one row per copy, most similar first
    notes: list[str] = field(default_factory=list)  #: why a statistic is missing

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("copy_share_ci", "member_closer_ci"):
            if getattr(self, key) is not None:
                out[key] = list(getattr(self, key))
        return out

    def member_closer_line(self) -> str | None:
        """One line for the member-closer statistic (None when it was not computed), e.g.
        'member-closer: 83.2% [81.0, 85.3] of synthetic images are nearer a labelled training image than
        any labelled held-out one (chance 50%; p = 0.002)'."""
        if self.member_closer_share is None or self.member_closer_ci is None or self.member_closer_p is None:
            return None
        low, high = self.member_closer_ci
        return (f"member-closer: {100 * self.member_closer_share:.1f}% [{100 * low:.1f}, {100 * high:.1f}] of "
                "synthetic images are nearer a labelled training image than any labelled held-out one "
                f"(chance 50%; p = {format_p(self.member_closer_p, self.alpha)})")

    def summary(self) -> str:
        """One line, e.g. 'verdict: leakage shown (p = 0.0005; copies: 12.5% [9.8, 15.4] of synthetic images)'.

        The copies clause appears whenever the copy share was computed, whatever the verdict.
        """
        parts = [f"p = {format_p(self.p_value, self.alpha)}"]
        if self.copy_share is not None and self.copy_share_ci is not None:
            low, high = self.copy_share_ci
            parts.append(f"copies: {100 * self.copy_share:.1f}% [{100 * low:.1f}, {100 * high:.1f}] "
                         "of synthetic images")
        shown = "shown" if self.leakage_shown else "not shown"
        return f"verdict: leakage {shown} ({'; '.join(parts)})"


def _closer_groups(labels: np.ndarray, groups, member_groups, n_members: int, n_nonmembers: int):
    """Groups of the member and non-member feature rows for the member-closer test: `groups` (one per
    score) split by label when the feature rows are the labelled reals in label order, else
    `member_groups` for the members and none for the non-members."""
    if groups is None:
        return member_groups, None
    groups = np.asarray(groups)
    if (labels == 1).sum() != n_members or (labels == 0).sum() != n_nonmembers:
        raise SynthleakError(f"{len(groups)} groups (one per score) cannot be matched to {n_members} member and "
                             f"{n_nonmembers} non-member feature rows; no test without whole-group relabelling")
    return groups[labels == 1], groups[labels == 0]


def verdict(scores, labels, *, groups=None, synthetic_features=None, member_features=None,
            nonmember_features=None, synthetic_ids: Sequence | None = None, member_ids: Sequence | None = None,
            member_groups=None, alpha: float = 0.05, permutations: int = 2000, seed: int = 0,
            copy_reference: str = "held-out") -> Verdict:
    """Dataset-level leakage verdict on label-free `scores` of labelled reals (1 = member, higher = "used").

    The scores must not have been fitted on these labels (cross-fitted scores are not label-free
    either): relabelling is only valid when the labels could have been any others. `groups` (one per
    score, e.g. patient ids) makes the relabelling patient-level; each group must carry one label.
    `leakage_shown` = p < `alpha` with p from `permutations` random relabellings (p >= 1/(1+permutations)).
    A "not shown" verdict is absence of evidence at this test's power, not proof of privacy.

    The three feature arrays (synthetic images, labelled members, labelled non-members; same width;
    all or none) add the descriptive statistics and the copies table; `synthetic_ids` / `member_ids`
    name their rows (row numbers otherwise) and `member_groups` gives the members' patients. With
    them the member-closer statistic is computed too (`member_closer`; its p-value from
    min(`permutations`, 500) relabellings, of whole groups when `groups` are given: the feature rows of
    members and non-members must then be the labelled reals in label order), and the held-out
    references (authenticity and memorised share of the non-members themselves); a statistic that
    cannot be computed on these data is left None with a note.
    Seeded: the same inputs and seed give the same verdict. Bad input raises SynthleakError (one line).
    """
    _check_alpha(alpha, permutations)
    result = permutation_test(scores, labels, groups=groups, permutations=permutations, seed=seed)
    labels = np.asarray(labels)
    out = Verdict(leakage_shown=result.p_value < alpha, p_value=result.p_value, alpha=float(alpha),
                  test=result.describe(), permutations=result.permutations, auc=result.auc,
                  n_members=int((labels == 1).sum()), n_nonmembers=int((labels == 0).sum()))
    given = [a is not None for a in (synthetic_features, member_features, nonmember_features)]
    if not any(given):
        if synthetic_ids is not None or member_ids is not None or member_groups is not None:
            raise SynthleakError("synthetic_ids / member_ids / member_groups need the feature arrays")
        return out
    if not all(given):
        raise SynthleakError("give synthetic_features, member_features and nonmember_features together")
    copies = find_copies(member_features, nonmember_features, synthetic_features, synthetic_ids=synthetic_ids,
                         member_ids=member_ids, seed=seed, copy_reference=copy_reference)
    out.copy_share, out.copy_share_ci, out.copy_threshold, out.copies = (
        copies.share, copies.ci, copies.threshold, copies.rows)
    out.authenticity = authenticity(member_features, synthetic_features, member_groups=member_groups)
    out.memorised_share = memorised_share(member_features, synthetic_features, member_groups=member_groups)
    out.authenticity_held_out = authenticity(member_features, nonmember_features, member_groups=member_groups)
    out.memorised_share_held_out = memorised_share(member_features, nonmember_features, member_groups=member_groups)
    try:
        closer_groups = _closer_groups(labels, groups, member_groups, len(member_features), len(nonmember_features))
        closer = member_closer(member_features, nonmember_features, synthetic_features, member_groups=closer_groups[0],
                               nonmember_groups=closer_groups[1], seed=seed,
                               permutations=min(int(permutations), MEMBER_CLOSER_PERMUTATIONS))
        out.member_closer_share, out.member_closer_ci, out.member_closer_p, out.member_closer_test = (
            closer.share, closer.ci, closer.p_value, closer.describe())
    except SynthleakError as exc:
        out.notes.append(f"member-closer: {exc}")
    try:
        out.ct = data_copying_ct(member_features, nonmember_features, synthetic_features, seed=seed)
    except SynthleakError as exc:
        out.notes.append(str(exc))
    return out
