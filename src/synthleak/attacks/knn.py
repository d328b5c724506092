"""One nearest-neighbour interface for 7,000 and 7,000,000 vectors: exact BLAS search, approximate FAISS above.

Exact search runs block by block over the database: a float32 GEMM (BLAS) per block gives
expanded-form squared distances, from which each query keeps its k + CANDIDATE_MARGIN best
candidates; their distances are then recomputed exactly (float64, from the vectors' differences) and
ordered by (distance, database row). float32 rounding could still have pushed a true neighbour out of
the candidates, so a query whose candidate list is not provably complete (the gap between its last
candidate and its k-th neighbour is within the rounding bound `_rounding_bound`) is searched again
with float64 GEMM on the blocks, keeping every row that per-pair rounding bounds cannot place beyond
its k-th neighbour (`_exact_f64`). Results are therefore exact,
ties go to the lower database row, and no float64 copy of the database is made: memory is one block
of the database at a time. A memory-mapped database (the feature store) is read block by block from
its file, so a search does not keep the matrix resident either.

Approximate search (`mode="approx"`, or `"auto"` with at least APPROX_MIN_ROWS database rows and
APPROX_MIN_QUERIES queries) uses FAISS IVF-SQ8, see `ApproxIndex` for the choice and the measurements;
its recall against exact search is measured on a sample of the queries every time it is used,
recorded, and warned about below RECALL_WARN. Searches over the same feature store (a file-backed
database) share the last index built over it (`_approx_index_for`).

A `SearchLog` carries the mode (`--search`) to the indexes it builds (`SearchLog.index`) and collects what
each of their searches did, for the run's JSON; the audit context holds one per method run and hands its
`index` factory to the methods. An index built directly searches in `mode` ("auto" by default), unlogged.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import SynthleakError
from ..mapped import file_position, read_rows, row_blocks, take_rows

SEARCH_MODES = ("auto", "exact", "approx")
#: `auto` searches approximately from this many database rows and queries on (see ApproxIndex)
APPROX_MIN_ROWS = 100_000
APPROX_MIN_QUERIES = 5_000
#: below this many rows even `approx` searches exactly (an index would hold a handful of lists)
APPROX_FLOOR_ROWS = 1_000
#: recall of the approximate index (on a sample, against exact search) below which the audit warns
RECALL_WARN = 0.99
#: queries whose approximate neighbours are checked against exact search
RECALL_SAMPLE = 200
#: float32 candidates kept per query beyond k, re-ranked exactly
CANDIDATE_MARGIN = 16
#: bytes of database (float32) and of float64 re-ranking work handled at once (larger blocks keep
#: the GEMM efficient: 32 MiB blocks made a 700 x 7,000 x 4,096 search 35% slower than one block)
BLOCK_BYTES = 128 << 20
#: queries searched in one pass over the database (bounds the [queries, block rows] distance tile)
QUERY_CHUNK = 4096
_U32 = float(np.finfo(np.float32).eps) / 2
_U64 = float(np.finfo(np.float64).eps) / 2


@dataclass
class SearchLog:
    """The search mode for the indexes it builds, and what each of their searches did."""

    mode: str = "auto"
    records: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_mode(self.mode)

    def index(self, database: np.ndarray, backend: str = "auto") -> "NeighbourIndex":
        """A neighbour index over `database` in this log's mode, its searches recorded here."""
        return NeighbourIndex(database, backend, self.mode, log=self)

    def summary(self) -> list[dict]:
        """Records merged by (mode, index, rows, dims): counts and queries summed, worst recall kept."""
        merged: dict[tuple, dict] = {}
        for r in self.records:
            key = (r["mode"], r["index"], r["rows"], r["dims"])
            if key not in merged:
                merged[key] = {**r, "searches": 0, "queries": 0}
            m = merged[key]
            m["searches"] += 1
            m["queries"] += r["queries"]
            if "recall" in r:
                m["recall"] = min(m["recall"], r["recall"])
        return list(merged.values())

    def low_recall(self) -> list[dict]:
        return [r for r in self.records if r.get("recall", 1.0) < RECALL_WARN]


#: what builds a neighbour index over a database: NeighbourIndex itself, or a SearchLog's `index`
IndexFactory = Callable[[np.ndarray], "NeighbourIndex"]


def _check_mode(mode: str) -> None:
    if mode not in SEARCH_MODES:
        raise SynthleakError(f"--search {mode!r}: choose from {', '.join(SEARCH_MODES)}")


class NeighbourIndex:
    """Euclidean k-NN over a fixed database of float32 vectors ([n, d] array or memory map).

    `backend`: "auto" (the exact BLAS search above) or "faiss" (exact, FAISS's flat k-NN for the float32
    candidates).
    `mode`: "exact", "approx" or "auto". `log`: where each search is recorded (see SearchLog.index).
    """

    def __init__(self, database: np.ndarray, backend: str = "auto", mode: str = "auto", log: SearchLog | None = None):
        if isinstance(database, np.memmap) and database.dtype == np.float32 and database.flags.c_contiguous:
            self.database = database  # read block by block from its file, never copied
        else:
            self.database = np.ascontiguousarray(database, dtype=np.float32)
        if self.database.ndim != 2 or len(self.database) == 0:
            raise ValueError("database must be a non-empty [n, d] array")
        if backend not in ("auto", "faiss"):
            raise ValueError(f"unknown neighbour-search backend {backend!r}")
        self.backend = backend
        _check_mode(mode)
        self.mode, self.log = mode, log
        self._approx: ApproxIndex | None = None

    def approximate(self, n_queries: int) -> bool:
        n = len(self.database)
        if self.mode == "exact" or n < APPROX_FLOOR_ROWS:
            return False
        return self.mode == "approx" or (n >= APPROX_MIN_ROWS and n_queries >= APPROX_MIN_QUERIES)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances [m, k] Euclidean float64, indices [m, k]) of the k nearest database rows, nearest first."""
        if not isinstance(queries, np.memmap):
            queries = np.ascontiguousarray(queries, dtype=np.float32)
        # (memory-mapped queries, e.g. the synthetic set queried against a few reals, are converted to
        # float32 QUERY_CHUNK rows at a time below, never whole)
        if queries.ndim != 2 or queries.shape[1] != self.database.shape[1]:
            raise ValueError(f"queries of shape {queries.shape} do not match the database {self.database.shape}")
        k = min(k, len(self.database))
        start = time.perf_counter()
        approximate = self.approximate(len(queries))
        record = {"mode": "approx" if approximate else "exact", "rows": len(self.database),
                  "dims": int(self.database.shape[1]), "queries": len(queries), "k": k}
        if len(queries) == 0:
            d, i = np.zeros((0, k)), np.zeros((0, k), np.int64)
        elif approximate:
            d, i = self._search_approx(queries, k, record)
        else:
            record["index"] = "exact-faiss" if self.backend == "faiss" else "exact-blas"
            parts = [self._exact(_chunk(queries, s), k) for s in range(0, len(queries), QUERY_CHUNK)]
            d, i = np.sqrt(np.concatenate([p[0] for p in parts])), np.concatenate([p[1] for p in parts])
        record["seconds"] = round(time.perf_counter() - start, 3)
        if self.log is not None:
            self.log.records.append(record)
        return d, i

    # --- exact -----------------------------------------------------------------------------------
    def _blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) over the database; a memory map is read from its file block by block."""
        return row_blocks(self.database, BLOCK_BYTES)

    def rows(self, index: np.ndarray) -> np.ndarray:
        """float32 database rows by index, any shape of index (a memory map is read with positioned reads,
        so rows looked up once do not stay resident)."""
        return take_rows(self.database, index)

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances float64 [m, k], indices [m, k]), exact, ties to the lower row."""
        n = len(self.database)
        kc = min(n, k + CANDIDATE_MARGIN)
        # Distances do not change under a common shift; centring on the queries' mean shrinks the
        # norms in the expanded form, and with them its float32 rounding error.
        centre = queries.mean(0, dtype=np.float64).astype(np.float32)
        q = queries - centre
        approx_d2, cand, max_norm = self._candidates(q, centre, kc, np.float32)
        bound = _rounding_bound(q, max_norm, self.database.shape[1], _U32)
        order = np.argsort(approx_d2, axis=1, kind="stable")
        approx_d2, cand = np.take_along_axis(approx_d2, order, 1), np.take_along_axis(cand, order, 1)
        # Only candidates within twice the bound of the k-th float32 value can be among the k nearest:
        # re-rank those (usually just k), not all kc.
        within = approx_d2 <= approx_d2[:, k - 1:k] + 2 * bound[:, None]
        width = max(k, int(within.sum(1).max()))
        d2, idx = self._rerank(queries, cand[:, :width], k, within[:, :width])
        if kc == n:
            return d2, idx
        # an excluded row has float32 value >= the last candidate's, so its exact distance is at least
        # that minus the rounding bound: beyond the k-th neighbour, unless the gap is within the bound
        unsure = np.flatnonzero(approx_d2[:, -1] - bound <= d2[:, -1])
        if len(unsure):
            d2[unsure], idx[unsure] = self._exact_f64(queries[unsure], centre, k)
        return d2, idx

    def _candidates(self, q: np.ndarray, centre: np.ndarray, kc: int, dtype
                    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Per query the kc smallest expanded-form squared distances (in `dtype`) and their rows."""
        m = len(q)
        q = q.astype(dtype, copy=False)
        qn = np.einsum("ij,ij->i", q, q)
        best_d = np.empty((m, 0), dtype)
        best_i = np.empty((m, 0), np.int64)
        max_norm = 0.0
        use_faiss = self.backend == "faiss" and dtype == np.float32
        for s, block in self._blocks():
            b = (block - centre).astype(dtype, copy=False)
            bn = np.einsum("ij,ij->i", b, b)
            max_norm = max(max_norm, float(np.sqrt(bn.max())))
            if use_faiss:
                import faiss

                d2, part = faiss.knn(np.ascontiguousarray(q), np.ascontiguousarray(b), min(kc, len(b)))
            else:
                d2 = q @ b.T
                d2 *= -2
                d2 += bn[None, :]
                d2 += qn[:, None]
                part = _smallest(d2, kc)
                d2 = np.take_along_axis(d2, part, 1)
            best_d = np.concatenate([best_d, d2.astype(dtype, copy=False)], 1)
            best_i = np.concatenate([best_i, part.astype(np.int64) + s], 1)
            if best_d.shape[1] > kc:
                keep = _smallest(best_d, kc)
                best_d, best_i = np.take_along_axis(best_d, keep, 1), np.take_along_axis(best_i, keep, 1)
        return best_d.astype(np.float64), best_i, max_norm

    def _rerank(self, queries: np.ndarray, cand: np.ndarray, k: int, use: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Exact float64 squared distances of the candidates (those marked in `use`, which must include
        each query's k best; the others rank last); the k best by (distance, row)."""
        qi, ci = np.nonzero(np.ones(cand.shape, bool) if use is None else use)
        d2 = np.full(cand.shape, np.inf)
        step = max(1, BLOCK_BYTES // (8 * queries.shape[1]))
        for s in range(0, len(qi), step):
            a, b = qi[s:s + step], ci[s:s + step]
            diff = self.rows(cand[a, b]).astype(np.float64)
            diff -= queries[a]
            d2[a, b] = np.einsum("ij,ij->i", diff, diff)
        order = np.lexsort((cand, d2), axis=1)[:, :k]
        return np.take_along_axis(d2, order, 1), np.take_along_axis(cand, order, 1)

    def _exact_f64(self, queries: np.ndarray, centre: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Queries whose float32 candidates were not provably complete: two float64 passes over the blocks.

        Every distance computed in float64 lies within a per-pair rounding bound of the exact one, so
        each row has a lower and an upper bound. Pass one finds each query's k-th smallest upper bound
        U_k (the true k-th distance is at most U_k); pass two keeps every row whose lower bound is at
        most U_k (a row above it is farther than k rows are, ties included), at least k rows by
        construction; those are re-ranked exactly. The bounds use each pair's own norms, so they hold
        for any database, centre and query set (no norm cached from an earlier search)."""
        c = centre.astype(np.float64)
        q = queries.astype(np.float64) - c
        qn = np.einsum("ij,ij->i", q, q)
        q_norm = np.sqrt(qn)
        unit = _relative_bound(self.database.shape[1], _U64)

        def bounds(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            b = block.astype(np.float64) - c
            bn = np.einsum("ij,ij->i", b, b)
            d2 = qn[:, None] + bn[None, :] - 2 * (q @ b.T)
            slack = unit * (q_norm[:, None] + np.sqrt(bn)[None, :]) ** 2
            return d2 - slack, d2 + slack

        kept_upper = np.empty((len(q), 0))
        for _, block in self._blocks():
            _, upper = bounds(block)
            kept_upper = np.concatenate([kept_upper, upper], 1)
            if kept_upper.shape[1] > k:
                kept_upper = np.take_along_axis(kept_upper, _smallest(kept_upper, k), 1)
        upper_k = kept_upper.max(1)
        found: list[list[np.ndarray]] = [[] for _ in range(len(q))]
        for s, block in self._blocks():
            lower, _ = bounds(block)
            for j, cols in enumerate(lower <= upper_k[:, None]):
                hits = np.flatnonzero(cols)
                if len(hits):
                    found[j].append(hits + s)
        out_d = np.empty((len(q), k))
        out_i = np.empty((len(q), k), np.int64)
        for j, parts in enumerate(found):
            cand = np.concatenate(parts)[None, :]
            out_d[j], out_i[j] = (a[0] for a in self._rerank(queries[j:j + 1], cand, k))
        return out_d, out_i

    # --- approximate -----------------------------------------------------------------------------
    def _search_approx(self, queries: np.ndarray, k: int, record: dict) -> tuple[np.ndarray, np.ndarray]:
        """IVF search with nprobe doubled until recall@k on a tuning sample is halfway from RECALL_WARN to 1; the
        recall reported is measured on a second, disjoint sample of queries (when there are enough)."""
        reused = self._approx is not None
        if self._approx is None:
            self._approx, reused = _approx_index_for(self)
        approx = self._approx
        order = np.random.default_rng(0).permutation(len(queries))
        tune = np.sort(order[:RECALL_SAMPLE // 2])
        check = np.sort(order[RECALL_SAMPLE // 2:RECALL_SAMPLE // 2 + RECALL_SAMPLE])
        if len(check) < RECALL_SAMPLE // 2:  # few queries: check on all of them
            check = np.arange(len(queries))
        sample = np.ascontiguousarray(take_rows(queries, np.r_[tune, check]), dtype=np.float32)
        truth_d2, truth_i = self._exact(sample, k)
        # tuned halfway between the warning level and 1: 100 tuning queries estimate recall too roughly
        # to stop right at the warning level (at 7,000 rows that left the independent check at 0.95)
        target = min(1.0, RECALL_WARN + (1.0 - RECALL_WARN) / 2)
        nprobe = approx.first_nprobe
        while nprobe < approx.nlist and _recall(approx.search(sample[:len(tune)], k, nprobe),
                                                (truth_d2[:len(tune)], truth_i[:len(tune)])) < target:
            nprobe = min(2 * nprobe, approx.nlist)
        parts = [approx.search(_chunk(queries, s), k, nprobe) for s in range(0, len(queries), QUERY_CHUNK)]
        d2, idx = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        record.update(approx.describe(), nprobe=nprobe, index_reused=reused)
        record["recall"] = _recall((d2[check], idx[check]), (truth_d2[len(tune):], truth_i[len(tune):]))
        record["recall_sample"] = len(check)
        if record["recall"] < RECALL_WARN:
            warnings.warn(f"approximate neighbour search over {len(self.database)} vectors: recall@{k} "
                          f"{record['recall']:.3f} < {RECALL_WARN} on {len(check)} sampled queries "
                          "(exact search: --search exact)", stacklevel=3)
        return np.sqrt(d2), idx


#: (identity of a feature store, its approximate index): the last index built over a file-backed
#: database. An audit searches the one synthetic store from several methods (nearest, the default
#: recipe's density ratio); each would otherwise build its own identical index (seeded), and two
#: indexes alive at once cost twice the codes' memory.
_store_index: tuple[tuple, ApproxIndex] | None = None


def _store_identity(database: np.ndarray) -> tuple | None:
    """What identifies a file-backed database's content: file, position, shape and the file's stat."""
    where = file_position(database)
    if where is None:
        return None
    st = os.stat(where[0])
    return (os.path.realpath(where[0]), where[1], database.shape, st.st_ino, st.st_size, st.st_mtime_ns)


def _approx_index_for(parent: NeighbourIndex) -> tuple[ApproxIndex, bool]:
    """(index, reused): the index of the last search over the same store, else a new one (which then
    replaces it; an in-memory database gets its own index, never shared)."""
    global _store_index
    key = _store_identity(parent.database)
    if key is not None and _store_index is not None and _store_index[0] == key:
        return _store_index[1], True
    if key is not None:
        _store_index = None  # a previous store's index may go before the next one is built
    index = ApproxIndex(parent)
    if key is not None:
        _store_index = (key, index)
    return index, False


class ApproxIndex:
    """FAISS IVF with 8-bit scalar-quantised lists (IVF-SQ8) over a NeighbourIndex's database; the
    k + CANDIDATE_MARGIN rows it returns are re-ranked exactly from the database.

    The choice (benchmarks/results/knn-index-50k.md; 50,000 x 4,096-d pixel features, 700 queries):
    - HNSW (M 32, efConstruction 40) had the best recall per query second on procedural images alone,
      but in the scale benchmark (benchmarks/bench_scale.py: 3,000 generated CT images of a real
      benchmark among procedural phantoms, its reals as queries) it lost the small cluster of CT
      images: recall@1 0.99 needed efSearch 4,096 at 50,000 and reached only 0.59 at 200,000, where
      its single-threaded build also took 5 minutes (FAISS builds HNSW graphs with threads that race
      for locks, so only a one-thread build gives the same graph twice). A graph walks from one entry
      point; an inverted file sends each query straight to its nearest cells, wherever they are.
    - IVF-Flat finds those cells too, but holds a float32 copy of every vector in growing lists (up
      to ~2x the feature store); IVF-SQ8 holds one byte per dimension (a quarter) and, re-ranked
      exactly, keeps the recall of IVF-Flat. IVF-PQ (64 bytes a vector) needed a re-rank hundreds of
      candidates deep for recall@50 0.99, slower than exact search.
    - nlist ~ sqrt(rows): k-means on 64 points per list (seeded, so the same inputs give the same
      index) stays cheap; with nlist ~ 4 sqrt(rows) k-means alone took 63 s at 50,000 rows.

    Building touches every vector with nlist distance computations, about what exact search costs
    for nlist queries, and a few thousand queries are one GEMM pass exactly: `auto` therefore needs
    many queries as well as many rows (APPROX_MIN_ROWS, APPROX_MIN_QUERIES).
    """

    def __init__(self, parent: NeighbourIndex, seed: int = 0):
        import faiss

        self.parent = parent
        n, d = parent.database.shape
        # at least 39 training points per list (FAISS's own minimum), 64 used per list
        self.nlist = int(min(max(16, 2 ** round(np.log2(np.sqrt(n)))), max(1, n // 39)))
        self.first_nprobe = max(1, self.nlist // 64)
        start = time.perf_counter()
        sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 64 * self.nlist), replace=False))
        self.index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(d), d, self.nlist,
                                                   faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        self.index.cp.seed = seed
        self.index.cp.niter = 20
        self.index.train(parent.rows(sample))
        for _, block in parent._blocks():
            self.index.add(np.ascontiguousarray(block))
        self.build_seconds = time.perf_counter() - start

    def describe(self) -> dict:
        return {"index": "faiss-ivf-sq8", "nlist": self.nlist, "build_seconds": round(self.build_seconds, 2)}

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(exact squared distances, rows) of the best k of the k + CANDIDATE_MARGIN rows IVF returns."""
        self.index.nprobe = nprobe
        _, cand = self.index.search(queries, min(len(self.parent.database), k + CANDIDATE_MARGIN))
        short = np.flatnonzero((cand < 0).any(1))  # the probed lists held fewer rows than asked for
        d2, idx = self.parent._rerank(queries, np.maximum(cand, 0), k)  # short rows are replaced below
        if len(short):
            d2[short], idx[short] = self.parent._exact(queries[short], k)
        return d2, idx


def _recall(found: tuple[np.ndarray, np.ndarray], truth: tuple[np.ndarray, np.ndarray]) -> float:
    """Share of the exact k nearest that a search returned; a row at exactly the k-th exact distance
    counts as found (a tie, not a miss)."""
    (d2, idx), (true_d2, true_idx) = found, truth
    k = true_idx.shape[1]
    hits = sum(len(set(i.tolist()) & set(t.tolist())) + int(np.sum((dd <= td[-1]) & ~np.isin(i, t)))
               for i, dd, t, td in zip(idx, d2, true_idx, true_d2))
    return round(hits / max(1, len(idx) * k), 4)


def _chunk(queries: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(read_rows(queries, start, start + QUERY_CHUNK), dtype=np.float32)


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest values of each row (unordered)."""
    if values.shape[1] <= k:
        return np.broadcast_to(np.arange(values.shape[1]), values.shape).copy()
    return np.argpartition(values, k - 1, axis=1)[:, :k]


def _relative_bound(dims: int, unit: float) -> float:
    """c such that c * (||q|| + ||b||)^2 bounds the rounding error of a squared distance computed as
    ||q||^2 + ||b||^2 - 2 q.b from centred vectors (q = x - centre, b = y - centre) in a format of unit
    roundoff `unit`.

    Each of the three terms is a dot product of `dims` products: error at most gamma * (sum of
    |products|) with gamma = dims * u / (1 - dims * u); by Cauchy-Schwarz each sum is at most
    (||q|| + ||b||)^2. Centring rounds each coordinate once (moving the distance by at most
    u (||q|| + ||b||), the squared distance by about 2u (||q|| + ||b||)^2 for each of q and b), and
    assembling the three terms rounds a few times more: 8u covers those, 1% covers the bound's own
    rounding and norms computed in the same format.
    """
    gamma = dims * unit / (1 - dims * unit)
    return (gamma + 8 * unit) * 1.01


def _rounding_bound(q: np.ndarray, max_norm: float, dims: int, unit: float) -> np.ndarray:
    """Per query, a bound on the rounding error of its computed squared distance to any database row
    whose centred norm is at most `max_norm` (see _relative_bound)."""
    qnorm = np.sqrt(np.einsum("ij,ij->i", q, q, dtype=np.float64))
    return _relative_bound(dims, unit) * (qnorm + max_norm) ** 2

