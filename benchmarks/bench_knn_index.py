"""Which approximate index for large synthetic sets? Exact BLAS search vs FAISS IVF, IVF-PQ and HNSW.

    python benchmarks/bench_knn_index.py [--synthetic 50000] [--queries 700] [--threads 1]
                                         [--reals ../shared/data/bench-iqoth]

Pixel features (64x64 = 4,096-d, the default space) are the database, in two settings:
- procedural: procedural images only (benchmarks/scale_data.py); 700 queries, half near-copies of
  synthetic images;
- cluster: a labelled benchmark's own generated images (bench-iqoth: 3,000 CT slices) among
  procedural images, its 600 reals as queries: the queries' neighbours sit in one small cluster of
  the database, as in bench_scale.py.
For each index: build seconds, MiB it holds, query seconds for k = 1 (`nearest`) and k = 50
(`nearest-local`), and recall@k against exact search. The production path (IVF-SQ8 re-ranked
exactly, attacks/knn.py) is measured through NeighbourIndex's ApproxIndex. Writes
benchmarks/results/knn-index-<n>k.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import publish  # noqa: E402
from scale_data import pixel_features, real_images, synthetic_images  # noqa: E402

from synthleak.attacks.knn import ApproxIndex, NeighbourIndex  # noqa: E402

PARAMS = {"ivf": (2, 8, 32), "hnsw": (64, 256, 1024), "pq": (8, 32)}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(db: np.ndarray, q: np.ndarray, wanted: set[str]) -> list[tuple]:
    """(index, build s, MiB held, parameter, k=1 s, recall@1, k=50 s, recall@50) per configuration."""
    import faiss

    n, d = db.shape
    rows = []
    exact = NeighbourIndex(db, mode="exact")
    (_, truth1), t1 = timed(lambda: exact.search(q, 1))
    (_, truth50), t50 = timed(lambda: exact.search(q, 50))
    rows.append(("exact (BLAS blocks, float64 re-rank)", 0.0, 0.0, "-", t1, 1.0, t50, 1.0))

    def both(search) -> tuple:
        i1, s1 = timed(lambda: search(1))
        i50, s50 = timed(lambda: search(50))
        return s1, recall(i1, truth1), s50, recall(i50, truth50)

    if "ivf-sq8" in wanted:  # the production index, through NeighbourIndex (exact re-rank of k + 16)
        approx, build = timed(lambda: ApproxIndex(NeighbourIndex(db)))
        size = faiss.serialize_index(approx.index).nbytes / 2**20
        for nprobe in PARAMS["ivf"]:
            rows.append((f"IVF-SQ8 nlist {approx.nlist}, exact re-rank (chosen)", build, size, f"nprobe {nprobe}",
                         *both(lambda k: approx.search(q, k, nprobe)[1])))
        approx = None
    nlist = int(2 ** round(np.log2(np.sqrt(n))))
    train = db[np.sort(np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False))]
    if "ivf-flat" in wanted:
        def build_flat():
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            index.train(train)
            index.add(db)
            return index

        flat, build = timed(build_flat)
        for nprobe in PARAMS["ivf"]:
            flat.nprobe = nprobe
            rows.append((f"IVF-Flat nlist {nlist}", build, faiss.serialize_index(flat).nbytes / 2**20,
                         f"nprobe {nprobe}", *both(lambda k: flat.search(q, k)[1])))
        flat = None  # free the copy of the vectors before the next index
    if "ivf-pq" in wanted:
        def build_pq():
            index = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nlist, 64, 8)
            index.train(train)
            index.add(db)
            return index

        pq, build = timed(build_pq)

        def refine(k: int, depth: int = 256) -> np.ndarray:
            _, cand = pq.search(q, depth)
            out = np.empty((len(q), k), np.int64)
            for s in range(0, len(q), 16):  # exact distances of the candidates, 16 queries at a time
                diff = db[cand[s:s + 16]] - q[s:s + 16, None, :]
                order = np.argsort(np.einsum("ijk,ijk->ij", diff, diff), axis=1)[:, :k]
                out[s:s + 16] = np.take_along_axis(cand[s:s + 16], order, 1)
            return out

        for nprobe in PARAMS["pq"]:
            pq.nprobe = nprobe
            rows.append((f"IVF-PQ64 nlist {nlist}, exact re-rank of 256", build,
                         faiss.serialize_index(pq).nbytes / 2**20, f"nprobe {nprobe}", *both(refine)))
        pq = None
    if "hnsw" in wanted:
        def build_graph():
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)  # the only deterministic build (see attacks/knn.py)
            index = faiss.IndexHNSWFlat(d, 32)
            index.hnsw.efConstruction = 40
            index.add(db)
            faiss.omp_set_num_threads(threads)
            return index

        graph, build = timed(build_graph)
        for ef in PARAMS["hnsw"]:
            graph.hnsw.efSearch = ef
            rows.append(("HNSW32 efConstruction 40 (one-thread build)", build,
                         faiss.serialize_index(graph).nbytes / 2**20, f"efSearch {ef}",
                         *both(lambda k: graph.search(q, k)[1])))
    return rows


def table(rows: list[tuple]) -> list[str]:
    out = ["| index | build s | MiB held | parameter | k=1 query s | recall@1 | k=50 query s | recall@50 |",
           "|---|---|---|---|---|---|---|---|"]
    for name, build, size, param, s1, r1, s50, r50 in rows:
        out.append(f"| {name} | {build:.1f} | {size:.0f} | {param} | {s1:.2f} | {r1:.3f} | {s50:.2f} | {r50:.3f} |")
    return out


def cluster_setting(reals: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """bench-iqoth's generated images among procedural ones; its reals as queries."""
    from synthleak.config import MethodConfig
    from synthleak.data import discover
    from synthleak.features.pixels import PixelExtractor

    data = discover(reals)
    pixels = PixelExtractor(MethodConfig(cache_dir="none"))
    own = np.concatenate([pixels.transform(chunk) for _, chunk in data.synthetic().iter_chunks()])
    procedural = np.concatenate([pixel_features(b) for b in synthetic_images(n - len(own))])
    queries = np.concatenate([pixels.transform(data.labelled()[0]), pixels.transform(data.real_unknown)])
    return np.concatenate([own, procedural]), queries


def main() -> int:
    import faiss

    p = argparse.ArgumentParser()
    p.add_argument("--synthetic", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=700)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--indexes", default="ivf-sq8,ivf-flat,ivf-pq,hnsw")
    p.add_argument("--reals", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "bench-iqoth"))
    args = p.parse_args()
    wanted = set(args.indexes.split(","))
    faiss.omp_set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    n = args.synthetic
    lines = ["# Neighbour index: exact vs approximate (FAISS)", "",
             f"- database: {n} synthetic images in the `pixels` space (4,096-d float32, "
             f"{n * 4096 * 4 / 2**30:.2f} GiB); {args.threads} thread(s), {os.cpu_count()} CPU cores shared with other "
             "workers (times vary by 20% or more)",
             "- MiB held: what the index keeps in memory beside the feature store (exact search holds one block)",
             "- recall@k against exact search on all queries; IVF nlist ~ sqrt(rows)", ""]
    db = np.concatenate([pixel_features(b) for b in synthetic_images(n)])
    q = pixel_features(real_images(args.queries, n)[0])
    lines += [f"## procedural: {len(q)} queries, half near-copies of synthetic images", "", *table(measure(db, q, wanted))]
    db = q = None
    if Path(args.reals, "test_labels.csv").exists():
        db, q = cluster_setting(Path(args.reals), n)
        lines += ["", f"## cluster: {Path(args.reals).name}'s 3,000 generated images among procedural ones, its "
                      f"{len(q)} reals as queries", "", *table(measure(db, q, wanted))]
    publish(f"knn-index-{n // 1000}k.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
