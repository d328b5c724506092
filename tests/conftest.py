"""Shared fixtures: a tiny phantom benchmark in the challenge layout, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# One thread keeps CPU tests predictable on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SYNTHLEAK_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_challenge(tmp_path_factory) -> Path:
    """12 patients x 4 slices; members trained into an instant 'noisy copies' generator."""
    from synthleak.bench.build import BenchSpec, build_benchmark
    from synthleak.bench.phantoms import make_phantoms

    images, groups = make_phantoms(12, 4, seed=1)
    out = tmp_path_factory.mktemp("tiny") / "bench"
    spec = BenchSpec(labelled_fraction=0.5, n_generated_train=24, n_generated_test=12,
                     generator="noisy-copies", seed=0)
    build_benchmark(images, groups, out, spec, quiet=True)
    return out


@pytest.fixture(scope="session")
def tiny_audit_data(tiny_challenge):
    from synthleak.data import discover

    return discover(tiny_challenge, groups=tiny_challenge / "groups.csv")


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path
