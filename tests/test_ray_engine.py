"""`--engine ray`: a local Ray instance decodes and embeds the synthetic images; scores equal the local engine's."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from synthleak.config import MethodConfig
from synthleak.data import discover
from synthleak.errors import UnreadableInputError
from synthleak.methods import run_method

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("method", ["nearest", "nearest-local"])
def test_ray_engine_scores_equal_local_engine(tiny_challenge, tmp_path, local_ray, method):
    data = discover(tiny_challenge)
    local = run_method(method, data, MethodConfig(cache_dir=str(tmp_path / "local"), quiet=True))
    on_ray = run_method(method, discover(tiny_challenge),
                        MethodConfig(cache_dir=str(tmp_path / "ray"), engine="ray", quiet=True))
    np.testing.assert_array_equal(on_ray.test_scores, local.test_scores)
    np.testing.assert_array_equal(on_ray.labelled_scores, local.labelled_scores)
    # the two engines write the same store (same key, same bytes)
    stores = [sorted((tmp_path / e / "features" / "pixels").glob("*.npy")) for e in ("local", "ray")]
    assert [p.name for p in stores[0]] == [p.name for p in stores[1]]
    for a, b in zip(*stores):
        assert a.read_bytes() == b.read_bytes()


def test_ray_engine_names_an_unreadable_file(tiny_challenge, tmp_path, local_ray):
    root = tmp_path / "data"
    shutil.copytree(tiny_challenge, root)
    bad = sorted((root / "train" / "generated").iterdir())[5]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UnreadableInputError, match=f"{bad.name}: "):
        run_method("nearest", discover(root), MethodConfig(cache_dir="none", engine="ray", quiet=True))
