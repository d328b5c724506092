"""Exact neighbour search, proved against float64 brute force on adversarial databases (hypothesis).

The exact search ranks in float32 and repairs what float32 rounding could have changed; these
properties look for any database, query set, block size, candidate margin or k where the repair is
incomplete: exact duplicates, near-ties, huge and tiny norms, queries far from the database, several
query sets (hence several centres) on one index, memory-mapped databases, k up to the database size.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthleak.attacks import knn
from synthleak.attacks.knn import NeighbourIndex


def brute_force(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 distances from the vectors' differences, ordered by (distance, row).

    Each squared distance is summed as the search's exact re-ranking sums it (einsum over a row of
    float64 differences): two distances equal in real arithmetic can round apart by an ulp under
    another summation order, and "ties to the lower row" is only defined for one arithmetic."""
    db = database.astype(np.float64)
    d2 = np.stack([np.einsum("ij,ij->i", db - q, db - q) for q in queries.astype(np.float64)])
    rows = np.broadcast_to(np.arange(len(database)), d2.shape)
    order = np.lexsort((rows, d2), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(d2, order, 1)), order


@st.composite
def search_problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 90))
    dims = draw(st.integers(1, 24))
    scale = 10.0 ** draw(st.integers(-6, 6))
    kind = draw(st.sampled_from(["normal", "grid", "near-ties", "offset"]))
    if kind == "grid":  # small integers: exact ties everywhere, every float computation exact
        database = rng.integers(-3, 4, (n, dims)).astype(np.float64) * scale
    elif kind == "near-ties":  # copies of a few rows moved by ~1e-5 of their spread
        base = rng.normal(0, scale, (max(1, n // 8), dims))
        database = base[rng.integers(0, len(base), n)] + rng.normal(0, scale * 1e-5, (n, dims))
    elif kind == "offset":  # far from the origin: large norms, small differences
        database = rng.normal(0, scale, (n, dims)) + rng.normal(0, scale * 1e4, dims)
    else:
        database = rng.normal(0, scale, (n, dims))
    duplicates = draw(st.integers(0, n // 2))
    if duplicates:  # exact duplicates of random rows, anywhere in the database
        database[rng.integers(0, n, duplicates)] = database[rng.integers(0, n, duplicates)]
    database = database.astype(np.float32)
    query_sets = []
    for _ in range(draw(st.integers(1, 3))):  # each query set is searched with its own centre
        m = draw(st.integers(1, 25))
        how = draw(st.sampled_from(["rows", "near", "far", "mixed"]))
        near = database[rng.integers(0, n, m)].astype(np.float64)
        if how == "rows":
            q = near
        elif how == "near":
            q = near + rng.normal(0, scale * 1e-3, (m, dims))
        elif how == "far":
            q = near + rng.normal(0, scale * 1e3, dims)
        else:
            q = np.where(rng.random((m, 1)) < 0.5, near, rng.normal(0, scale, (m, dims)) + near.mean(0))
        query_sets.append(q.astype(np.float32))
    ks = sorted({draw(st.integers(1, n)) for _ in range(2)} | {n} if draw(st.booleans()) else
                {draw(st.integers(1, n))})
    return database, query_sets, ks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=search_problems(), block_rows=st.integers(1, 40), margin=st.integers(0, 16),
       mapped=st.booleans(), backend=st.sampled_from(["auto", "faiss"]))
def test_exact_search_equals_float64_brute_force(problem, block_rows, margin, mapped, backend):
    database, query_sets, ks = problem
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(knn, "BLOCK_BYTES", 4 * database.shape[1] * block_rows), \
            mock.patch.object(knn, "CANDIDATE_MARGIN", margin):
        if mapped:
            np.save(Path(tmp) / "db.npy", database)
            stored = np.load(Path(tmp) / "db.npy", mmap_mode="r")
        index = NeighbourIndex(stored if mapped else database, backend, mode="exact")
        for queries in query_sets:
            for k in ks:
                distances, rows = index.search(queries, k)
                true_distances, true_rows = brute_force(queries, database, k)
                np.testing.assert_array_equal(rows, true_rows)
                np.testing.assert_allclose(distances, true_distances, rtol=1e-12, atol=0)
        del index
        if mapped:
            del stored


def test_a_second_query_set_with_another_centre_keeps_every_neighbour():
    """The reported failure's shape: one index, query sets far apart, k = 50 of many near-equal rows.

    The float64 pass used to bound rounding with the database norm measured around the *first*
    centre it saw, too small for a later, distant one; it kept 49 rows for k = 50."""
    rng = np.random.default_rng(7)
    database = (rng.normal(0, 1, (3000, 64)) * 0.01 + 1.0).astype(np.float32)
    index = NeighbourIndex(database, mode="exact")
    for shift in (0.0, 40.0, -300.0):
        queries = (database[rng.integers(0, 3000, 200)] + shift).astype(np.float32)
        rows = index.search(queries, 50)[1]
        np.testing.assert_array_equal(rows, brute_force(queries, database, 50)[1])
