"""Which approximate index for large synthetic sets? Exact BLAS search vs FAISS IVF-Flat, IVF-PQ, HNSW.

    python benchmarks/bench_knn_index.py [--synthetic 50000] [--queries 700] [--threads 1]

Pixel features (64x64 = 4,096-d, the default space) of procedural synthetic images
(benchmarks/scale_data.py) are the database; 700 real images (half near-copies of synthetic ones)
the queries, as in an audit. For each index: build seconds, bytes held in memory, query seconds for
k = 1 (`nearest`) and k = 50 (`nearest-local`), and recall@k against exact search. Writes
benchmarks/results/knn-index.md.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_data import pixel_features, real_images, synthetic_images  # noqa: E402

from synthleak.attacks.knn import NeighbourIndex  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def index_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> int:
    import faiss

    p = argparse.ArgumentParser()
    p.add_argument("--synthetic", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=700)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--indexes", default="ivf-sqrt,ivf-4sqrt,ivf-pq,hnsw",
                   help="which approximate indexes to measure beside exact search")
    args = p.parse_args()
    wanted = set(args.indexes.split(","))
    faiss.omp_set_num_threads(args.threads)
    db = np.concatenate([pixel_features(b) for b in synthetic_images(args.synthetic)])
    q = pixel_features(real_images(args.queries, args.synthetic)[0])
    n, d = db.shape
    rows = []

    exact = NeighbourIndex(db, mode="exact")
    (_, truth1), t1 = timed(lambda: exact.search(q, 1))
    (_, truth50), t50 = timed(lambda: exact.search(q, 50))
    rows.append(("exact (BLAS blocks + float64 re-rank)", 0.0, 0, "-", t1, 1.0, t50, 1.0))

    def ivf(kind: str, nlist: int):
        rng = np.random.default_rng(0)
        train = db[np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))]
        quantizer = faiss.IndexFlatL2(d)
        index = (faiss.IndexIVFFlat(quantizer, d, nlist) if kind == "flat"
                 else faiss.IndexIVFPQ(quantizer, d, nlist, 64, 8))
        index.train(train)
        index.add(db)
        return index

    for family, factor in (("ivf-sqrt", 1), ("ivf-4sqrt", 4)):
        if family not in wanted:
            continue
        nlist = int(2 ** round(np.log2(factor * np.sqrt(n))))
        flat, build = timed(lambda: ivf("flat", nlist))
        for nprobe in (4, 8, 16, 32, 64):
            flat.nprobe = nprobe
            (_, i1), s1 = timed(lambda: flat.search(q, 1))
            (_, i50), s50 = timed(lambda: flat.search(q, 50))
            rows.append((f"IVF-Flat nlist {nlist}", build, index_bytes(flat), nprobe, s1, recall(i1, truth1), s50,
                         recall(i50, truth50)))
        flat = None  # free the copy of the vectors before the next index

    nlist = int(2 ** round(np.log2(4 * np.sqrt(n))))
    pq, build = timed(lambda: ivf("pq", nlist)) if "ivf-pq" in wanted else (None, 0.0)
    for nprobe in (8, 32) if pq is not None else ():
        pq.nprobe = nprobe
        for depth in (64, 512):
            def refine(k: int):
                _, cand = pq.search(q, max(depth, k))
                out = np.empty((len(q), k), np.int64)
                for s in range(0, len(q), 16):  # exact distances of the candidates, 16 queries at a time
                    diff = db[cand[s:s + 16]] - q[s:s + 16, None, :]
                    order = np.argsort(np.einsum("ijk,ijk->ij", diff, diff), axis=1)[:, :k]
                    out[s:s + 16] = np.take_along_axis(cand[s:s + 16], order, 1)
                return out

            i1, s1 = timed(lambda: refine(1))
            i50, s50 = timed(lambda: refine(50))
            rows.append((f"IVF-PQ64 nlist {nlist} + exact re-rank of {depth}", build, index_bytes(pq), nprobe, s1,
                         recall(i1, truth1), s50, recall(i50, truth50)))
    pq = None

    if "hnsw" in wanted:
        def hnsw():
            index = faiss.IndexHNSWFlat(d, 32)
            index.hnsw.efConstruction = 40
            index.add(db)
            return index

        graph, build = timed(hnsw)
        for ef in (64, 256):
            graph.hnsw.efSearch = ef
            (_, i1), s1 = timed(lambda: graph.search(q, 1))
            (_, i50), s50 = timed(lambda: graph.search(q, 50))
            rows.append(("HNSW32 (efConstruction 40)", build, index_bytes(graph), f"ef {ef}", s1, recall(i1, truth1),
                         s50, recall(i50, truth50)))

    lines = ["# Neighbour index: exact vs approximate (FAISS)", "",
             f"- database: {n} synthetic images in the `pixels` space ({d}-d float32, "
             f"{db.nbytes / 2**30:.2f} GiB); queries: {len(q)} real images (half near-copies of synthetic ones)",
             f"- {args.threads} thread(s), {os.cpu_count()} CPU cores (shared machine: times vary by ~20%)",
             "- memory: bytes the index holds beside the features (IVF-Flat and HNSW copy every vector; exact "
             "search reads the feature store block by block and holds nothing)", "",
             "| index | build s | index MiB | nprobe / ef | k=1 query s | recall@1 | k=50 query s | recall@50 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, build, size, param, s1, r1, s50, r50 in rows:
        lines.append(f"| {name} | {build:.1f} | {size / 2**20:.0f} | {param} | {s1:.2f} | {r1:.3f} | {s50:.2f} | "
                     f"{r50:.3f} |")
    RESULTS.mkdir(exist_ok=True)
    text = "\n".join(lines) + "\n"
    out = io.StringIO(text)
    (RESULTS / f"knn-index-{n // 1000}k.md").write_text(out.getvalue())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
