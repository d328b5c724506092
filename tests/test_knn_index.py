"""The neighbour index: exact in float32 without float64 copies, memory-mapped databases, approximate search."""
from __future__ import annotations

import numpy as np
import pytest

from synthleak.attacks import knn
from synthleak.attacks.knn import NeighbourIndex, SearchLog


def _brute(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 brute force with ties to the lower row."""
    d2 = ((q.astype(np.float64)[:, None] - db.astype(np.float64)[None]) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(db)), d2.shape), d2), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(d2, order, 1)), order


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(knn, "BLOCK_BYTES", 4 * 16 * 7)  # 7 rows of 16 floats per block


@pytest.mark.parametrize("backend", ["auto", "faiss"])
def test_exact_with_ties_duplicates_and_blocks(tiny_blocks, backend):
    rng = np.random.default_rng(0)
    db = rng.integers(0, 4, (300, 16)).astype(np.float32)  # small integers: many exact ties
    db[50:80] = db[3]
    q = np.r_[db[[3, 10, 299]], rng.integers(0, 4, (37, 16)).astype(np.float32)]
    for k in (1, 5, 40):
        d, i = NeighbourIndex(db, backend).search(q, k)
        bd, bi = _brute(q, db, k)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_allclose(d, bd, rtol=0, atol=1e-12)
    assert NeighbourIndex(db, backend).search(db[3:4], 31)[1][0].tolist() == [3, *range(50, 80)]


def test_float32_rounding_is_caught_by_the_float64_pass(monkeypatch):
    """Vectors far from the origin with tiny differences: float32's expanded form cannot rank them."""
    rng = np.random.default_rng(1)
    offset = rng.normal(0, 3000, 64)
    db = (offset + rng.normal(0, 0.01, (500, 64))).astype(np.float32)
    q = (offset + rng.normal(0, 0.01, (20, 64))).astype(np.float32) + 5000  # queries far from the database
    unsure = []
    real = NeighbourIndex._exact_f64

    def spy(self, queries, *args):
        unsure.append(len(queries))
        return real(self, queries, *args)

    monkeypatch.setattr(NeighbourIndex, "_exact_f64", spy)
    d, i = NeighbourIndex(db).search(q, 3)
    bd, bi = _brute(q, db, 3)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, rtol=1e-12)
    assert unsure and unsure[0] > 0


def test_memory_mapped_database_is_read_in_blocks(tmp_path, tiny_blocks):
    rng = np.random.default_rng(2)
    db = rng.normal(size=(200, 16)).astype(np.float32)
    np.save(tmp_path / "db.npy", db)
    mapped = np.load(tmp_path / "db.npy", mmap_mode="r")
    index = NeighbourIndex(mapped)
    assert index.database is mapped  # no copy
    q = rng.normal(size=(30, 16)).astype(np.float32)
    d, i = index.search(q, 4)
    d2, i2 = NeighbourIndex(db).search(q, 4)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(d, d2)


def test_search_log_records_searches():
    rng = np.random.default_rng(3)
    db, q = rng.normal(size=(100, 8)), rng.normal(size=(10, 8))
    ctx = SearchLog("exact")
    index = ctx.index(db)
    index.search(q, 1)
    index.search(q, 2)
    NeighbourIndex(db).search(q, 1)  # built directly: not recorded
    summary = ctx.summary()
    assert len(summary) == 1 and summary[0]["searches"] == 2 and summary[0]["queries"] == 20
    assert summary[0]["mode"] == "exact" and summary[0]["rows"] == 100
    with pytest.raises(Exception, match="--search 'fast'"):
        SearchLog("fast")
    with pytest.raises(Exception, match="--search 'fast'"):
        NeighbourIndex(db, mode="fast")


def _clusters(n: int, d: int = 32, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (40, d))
    return (centres[rng.integers(0, 40, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def test_approximate_search_is_tuned_to_the_recall_and_recorded():
    """IVF with nprobe raised until the sampled recall is reached; the same inputs give the same index."""
    db, q = _clusters(6000), _clusters(300, seed=5)
    ctx = SearchLog("approx")
    d, i = ctx.index(db).search(q, 5)
    (record,) = ctx.records
    assert record["mode"] == "approx" and record["index"] == "faiss-ivf-sq8" and 1 <= record["nprobe"] <= record["nlist"]
    assert record["recall"] >= knn.RECALL_WARN and record["recall_sample"] == 200
    exact_d, exact_i = NeighbourIndex(db, mode="exact").search(q, 5)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(i, exact_i)]) >= 0.98
    found = np.array([set(a) == set(b) for a, b in zip(i, exact_i)])
    np.testing.assert_allclose(d[found], exact_d[found], rtol=1e-12)  # returned distances are exact
    again = NeighbourIndex(db, mode="approx").search(q, 5)
    np.testing.assert_array_equal(again[1], i)


def test_low_recall_warns(monkeypatch):
    monkeypatch.setattr(knn, "RECALL_WARN", 1.01)  # unreachable: nprobe goes up to every list, then warns
    with pytest.warns(UserWarning, match=r"recall@1 [01]\.\d+ < 1.01 on 200 sampled queries"):
        NeighbourIndex(_clusters(3000), mode="approx").search(_clusters(400, seed=6), 1)


def test_auto_searches_exactly_unless_rows_and_queries_are_many(monkeypatch):
    db, q = _clusters(3000), _clusters(50, seed=7)
    ctx = SearchLog("auto")
    ctx.index(db).search(q, 1)
    monkeypatch.setattr(knn, "APPROX_MIN_ROWS", 2000)
    monkeypatch.setattr(knn, "APPROX_MIN_QUERIES", 40)
    ctx.index(db).search(q, 1)
    ctx.index(db[:500]).search(q, 1)  # below the floor: always exact
    assert [r["mode"] for r in ctx.records] == ["exact", "approx", "exact"]


def test_memory_mapped_queries_are_searched_in_chunks(tmp_path, monkeypatch):
    """The synthetic set as queries (e.g. against a few labelled members) is never converted whole."""
    monkeypatch.setattr(knn, "QUERY_CHUNK", 7)
    rng = np.random.default_rng(8)
    q = rng.normal(size=(50, 12)).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    mapped = np.load(tmp_path / "q.npy", mmap_mode="r")
    db = rng.normal(size=(30, 12))
    for mode in ("exact", "approx"):
        monkeypatch.setattr(knn, "APPROX_FLOOR_ROWS", 10)
        d, i = NeighbourIndex(db, mode=mode).search(mapped, 2)
        bd, bi = _brute(q, db.astype(np.float32), 2)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_allclose(d, bd, rtol=1e-12)


def test_one_approximate_index_serves_every_search_over_a_store(tmp_path, monkeypatch):
    """An audit's methods each open the synthetic store: the second search reuses the first's index
    (same results as a fresh one), a changed or different store gets its own, in-memory arrays never share."""
    built = []
    original = knn.ApproxIndex.__init__

    def counting_init(self, parent, seed=0):
        built.append(len(parent.database))
        original(self, parent, seed)

    monkeypatch.setattr(knn.ApproxIndex, "__init__", counting_init)
    monkeypatch.setattr(knn, "_store_index", None)
    db, q = _clusters(3000), _clusters(300, seed=9)
    np.save(tmp_path / "store.npy", db)
    store = lambda: np.load(tmp_path / "store.npy", mmap_mode="r")  # noqa: E731 - a fresh map each time
    ctx = SearchLog("approx")
    first = ctx.index(store()).search(q, 3)
    second = ctx.index(store()).search(q, 3)
    ctx.index(db).search(q, 3)
    ctx.index(db).search(q, 3)
    assert built == [3000, 3000, 3000]
    assert [r["index_reused"] for r in ctx.records] == [False, True, False, False]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    np.save(tmp_path / "store.npy", db[:2500])  # rewritten store: new identity
    ctx = SearchLog("approx")
    ctx.index(store()).search(q, 3)
    ctx.index(store()[:2000]).search(q, 3)  # a slice of it is another database
    assert built == [3000, 3000, 3000, 2500, 2000]
