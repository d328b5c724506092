"""One nearest-neighbour interface: exact torch/BLAS for small sets, FAISS for large ones."""
from __future__ import annotations

import numpy as np

#: queries x database above which FAISS is used (below it torch's BLAS is as fast and has no overhead)
FAISS_MIN_WORK = 2_000_000


class NeighbourIndex:
    """Exact Euclidean k-NN over a fixed database of float32 vectors."""

    def __init__(self, database: np.ndarray, backend: str = "auto"):
        self.database = np.ascontiguousarray(database, dtype=np.float32)
        if self.database.ndim != 2 or len(self.database) == 0:
            raise ValueError("database must be a non-empty [n, d] array")
        self.backend = backend
        self._faiss = None

    def _use_faiss(self, n_queries: int) -> bool:
        if self.backend == "faiss":
            return True
        if self.backend in ("torch", "numpy"):
            return False
        return n_queries * len(self.database) >= FAISS_MIN_WORK

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances [m, k] Euclidean, indices [m, k]) of the k nearest database rows, nearest first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.database))
        if self._use_faiss(len(queries)):
            return self._search_faiss(queries, k)
        return self._search_torch(queries, k)

    def _search_faiss(self, queries: np.ndarray, k: int):
        import faiss

        if self._faiss is None:
            self._faiss = faiss.IndexFlatL2(self.database.shape[1])
            self._faiss.add(self.database)
        d2, idx = self._faiss.search(queries, k)
        return np.sqrt(np.maximum(d2, 0)), idx

    def _search_torch(self, queries: np.ndarray, k: int):
        import torch

        db = torch.from_numpy(self.database).double()
        dists, idxs = [], []
        # Float64 and chunking keep the expanded ||a||^2 - 2ab + ||b||^2 form exact enough for ties.
        for start in range(0, len(queries), 1024):
            q = torch.from_numpy(queries[start:start + 1024]).double()
            d = torch.cdist(q, db)
            val, ind = torch.topk(d, k, dim=1, largest=False, sorted=True)
            dists.append(val.numpy())
            idxs.append(ind.numpy())
        return np.concatenate(dists).astype(np.float64), np.concatenate(idxs)


def nearest_distance(queries: np.ndarray, database: np.ndarray, k: int = 1) -> np.ndarray:
    """Mean distance to the k nearest database vectors (k=1: the nearest)."""
    d, _ = NeighbourIndex(database).search(queries, k)
    return d.mean(axis=1)
