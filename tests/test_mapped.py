"""Rows of memory-mapped stores read from their files: the same values as slicing, none of the residency."""
from __future__ import annotations

import mmap
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthleak.attacks.knn import NeighbourIndex
from synthleak.leakage import memorised_share
from synthleak.mapped import file_position, read_rows, row_blocks, take_rows


def _mapped(tmp_path, data: np.ndarray, offset: int) -> np.memmap:
    path = tmp_path / f"store-{offset}.bin"
    with open(path, "wb") as f:
        f.write(b"\x07" * offset)  # a header of any length before the rows
        f.write(np.ascontiguousarray(data).tobytes())
    return np.memmap(path, dtype=data.dtype, mode="r", offset=offset, shape=data.shape)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 9), offset=st.sampled_from([0, 3, 128, mmap.ALLOCATIONGRANULARITY + 5]),
       lo=st.integers(0, 40), hi=st.integers(0, 45), view=st.sampled_from(["memmap", "slice", "asarray-slice"]),
       seed=st.integers(0, 2**16))
def test_reads_equal_slicing(tmp_path_factory, rows, cols, offset, lo, hi, view, seed):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(rows, cols)).astype(np.float32)
    mapped = _mapped(tmp_path_factory.mktemp("m"), data, offset)
    cut = min(lo, rows - 1)
    arr = {"memmap": mapped, "slice": mapped[cut:], "asarray-slice": np.asarray(mapped)[cut:]}[view]
    ref = data if view == "memmap" else data[cut:]
    assert file_position(arr) is not None
    np.testing.assert_array_equal(read_rows(arr, lo, hi), ref[lo:hi])
    index = rng.integers(-len(ref), len(ref), size=(3, 4))
    np.testing.assert_array_equal(take_rows(arr, index), ref[index])
    blocks = list(row_blocks(arr, block_bytes=4 * cols * 3))
    assert [s for s, _ in blocks] == list(range(0, len(ref), 3))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), ref)
    with pytest.raises(IndexError):
        take_rows(arr, [len(ref)])


def test_arrays_that_are_not_file_maps_are_sliced():
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert file_position(data) is None and file_position(data[:, :2]) is None
    np.testing.assert_array_equal(read_rows(data, 1, 3), data[1:3])
    np.testing.assert_array_equal(take_rows(data, [[3, 0]]), data[[[3, 0]]])


def test_search_over_a_slice_of_a_store_uses_the_slice(tmp_path):
    """A memmap row slice keeps its parent's `offset`: reading at that offset would search the wrong rows."""
    rng = np.random.default_rng(3)
    data = rng.normal(size=(60, 8)).astype(np.float32)
    mapped = _mapped(tmp_path, data, 100)
    queries = data[[45, 50, 59]] + 1e-3
    for view in (mapped[40:], np.asarray(mapped)[40:]):
        d, i = NeighbourIndex(view, mode="exact").search(queries, 2)
        d_ref, i_ref = NeighbourIndex(data[40:].copy(), mode="exact").search(queries, 2)
        np.testing.assert_array_equal(i, i_ref)
        np.testing.assert_allclose(d, d_ref)
    members = rng.normal(size=(30, 8)).astype(np.float32)
    assert memorised_share(members, np.asarray(mapped)[10:]) == memorised_share(members, data[10:].copy())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssFile from /proc")
def test_a_pass_over_a_store_does_not_stay_resident(tmp_path):
    """Mapped pages count in RSS until the map closes; rows read from the file do not (64 MiB store)."""
    script = textwrap.dedent(f"""
        import numpy as np
        from synthleak.mapped import row_blocks
        from synthleak.leakage import _feature_matrix
        def rss_file_mib():
            for line in open("/proc/self/status"):
                if line.startswith("RssFile"):
                    return int(line.split()[1]) / 1024
        path = {str(tmp_path / "store.npy")!r}
        np.save(path, np.ones((4096, 4096), np.float32))
        store = np.load(path, mmap_mode="r")
        before = rss_file_mib()
        total = sum(float(b.sum()) for _, b in row_blocks(store, 8 << 20))
        _feature_matrix(store, "synthetic", 1)  # the verdict's finiteness check
        after_reads = rss_file_mib()
        total_mapped = sum(float(store[s:s + 512].sum()) for s in range(0, 4096, 512))
        after_slicing = rss_file_mib()
        assert total == total_mapped == 4096 * 4096
        print(after_reads - before, after_slicing - after_reads)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    grew_reading, grew_slicing = map(float, out)
    assert grew_slicing > 48  # the measurement works: slicing the map leaves its pages resident
    assert grew_reading < 8
