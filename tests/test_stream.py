"""Streaming synthetic images: chunked results equal in-memory ones, the feature store, unreadable files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from synthleak.cli import main
from synthleak.config import MethodConfig
from synthleak.data import discover, load_folder
from synthleak.data.layout import AuditData
from synthleak.data.stream import LazyImageSet
from synthleak.errors import UnreadableInputError
from synthleak.features import store as store_module
from synthleak.features.pixels import PixelExtractor
from synthleak.features.store import image_features
from synthleak.methods import run_method
from synthleak.features.embedding import training_synthetic
from helpers import write_dicom, write_images


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 4 images, so that a dozen images cross several chunk boundaries."""
    monkeypatch.setattr(store_module, "DEFAULT_CHUNK", 4)


def _in_memory(data: AuditData) -> AuditData:
    """The same audit with every synthetic image loaded into memory, as before streaming."""
    return AuditData(generated=data.generated.materialise(),
                     test_generated=None if data.test_generated is None else data.test_generated.materialise(),
                     real_used=data.real_used, real_not_used=data.real_not_used, real_unknown=data.real_unknown,
                     groups=data.groups)


def test_lazy_set_reads_the_pixels_load_folder_reads(tmp_path):
    write_images(tmp_path / "g", 9, "g", seed=3)
    write_images(tmp_path / "g", 2, "small", size=100, seed=4)  # resized like load_folder resizes them
    lazy = LazyImageSet.from_folder(tmp_path / "g")
    with pytest.warns(UserWarning, match="2 of 11 images were not 256x256"):
        loaded = load_folder(tmp_path / "g")
    assert lazy.ids == loaded.ids and len(lazy) == 11
    with pytest.warns(UserWarning, match="2 of 11 images were not 256x256"):
        chunks = list(lazy.iter_chunks(4))
    assert [s for s, _ in chunks] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([c.pixels for _, c in chunks]), loaded.pixels)
    np.testing.assert_array_equal(lazy.read([10, 0, 3]), loaded.pixels[[10, 0, 3]])
    whole = lazy.materialise([1, 5])
    # materialised images are keyed by their pixels, like loaded ones: model cache keys do not change
    assert whole.hashes == [loaded.hashes[1], loaded.hashes[5]] and whole.ids == [loaded.ids[1], loaded.ids[5]]


def test_content_key_follows_file_content_not_names(tmp_path):
    write_images(tmp_path / "a", 3, "x", seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    key = LazyImageSet.from_folder(tmp_path / "a").content_key()
    assert LazyImageSet.from_folder(tmp_path / "b").content_key() == key
    write_images(tmp_path / "b", 1, "x", seed=9)  # overwrites x_1.png with other pixels
    assert LazyImageSet.from_folder(tmp_path / "b").content_key() != key


def test_multiframe_dicom_synthetic_images_stream(tmp_path):
    pytest.importorskip("pydicom")
    folder = tmp_path / "generated"
    write_images(folder, 3, "a", seed=1)
    rng = np.random.default_rng(0)
    write_dicom(folder / "b.dcm", rng.integers(-1000, 400, (5, 64, 64)).astype(np.int16))
    write_images(folder, 2, "c", seed=2)
    loaded = load_folder(folder, warn=False)
    lazy = LazyImageSet.from_folder(folder)
    assert lazy.ids == loaded.ids and "b_f0005" in lazy.ids and lazy.converted == {"DICOM": 5}
    with pytest.warns(UserWarning, match="5 of 10 images were not 256x256"):  # once, after the first pass
        for chunk_size in (2, 3, 100):  # frames of one file across chunk boundaries
            streamed = np.concatenate([c.pixels for _, c in lazy.iter_chunks(chunk_size)])
            np.testing.assert_array_equal(streamed, loaded.pixels)
    np.testing.assert_array_equal(lazy.read([7, 3]), loaded.pixels[[7, 3]])
    # the window is part of the key (it changes the pixels of CT images), not for PNG-only sets
    assert LazyImageSet.from_folder(folder, window="mediastinum").content_key() != lazy.content_key()


@pytest.mark.parametrize("method", ["nearest", "nearest-local", "density-ratio", "domias", "nearest-calibrated"])
def test_streamed_scores_equal_in_memory_scores(tiny_challenge, small_chunks, method):
    streamed = discover(tiny_challenge)
    assert isinstance(streamed.generated, LazyImageSet)
    cfg = MethodConfig(cache_dir="none")
    a = run_method(method, streamed, cfg)
    b = run_method(method, _in_memory(streamed), cfg)
    np.testing.assert_array_equal(a.test_scores, b.test_scores)
    np.testing.assert_array_equal(a.labelled_scores, b.labelled_scores)
    if b.neighbours is not None:
        np.testing.assert_array_equal(a.neighbours, b.neighbours)


def test_store_is_reused_without_decoding(tiny_challenge, tmp_path, monkeypatch):
    cfg = MethodConfig(cache_dir=str(tmp_path / "cache"))
    data = discover(tiny_challenge)
    first = run_method("nearest", data, cfg).test_scores
    folder = tmp_path / "cache" / "features" / "pixels"
    stores = [p for p in folder.glob("*.npy") if len(np.load(p, mmap_mode="r")) == len(data.synthetic())]
    assert len(stores) == 1 and not list(folder.glob("*.partial"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached store must not decode images")

    monkeypatch.setattr("synthleak.data.stream.decode_file", no_decoding)
    np.testing.assert_array_equal(run_method("nearest", discover(tiny_challenge), cfg).test_scores, first)


def test_interrupted_store_build_resumes(tiny_challenge, tmp_path, monkeypatch, small_chunks):
    data = discover(tiny_challenge)
    synthetic = data.synthetic()
    cfg = MethodConfig(cache_dir=str(tmp_path))
    extractor = PixelExtractor(cfg)
    expected = extractor.transform(synthetic.materialise())
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY_S", 0.0)
    calls = []
    transform = PixelExtractor.transform

    def interrupted(self, images):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return transform(self, images)

    monkeypatch.setattr(PixelExtractor, "transform", interrupted)
    with pytest.raises(KeyboardInterrupt):
        image_features(extractor, synthetic, cfg)
    partial = list((tmp_path / "features" / "pixels").glob("*.partial"))
    assert len(partial) == 1
    progress = json.loads(partial[0].with_name(partial[0].name.replace(".partial", ".progress")).read_text())
    assert progress["rows"] == 8
    calls.clear()
    monkeypatch.setattr(PixelExtractor, "transform", transform)
    feats = image_features(extractor, synthetic, cfg)
    np.testing.assert_array_equal(feats, expected)
    assert isinstance(feats, np.memmap) and not list((tmp_path / "features" / "pixels").glob("*.partial"))


def test_training_subset_reads_only_its_images(tiny_challenge, monkeypatch):
    data = discover(tiny_challenge)
    decoded = []
    from synthleak.data import stream

    real_decode = stream.decode_file
    monkeypatch.setattr(stream, "decode_file", lambda path, *a, **k: decoded.append(path) or real_decode(path, *a, **k))
    images, desc = training_synthetic(data, MethodConfig(max_train_images=5))
    assert len(images) == 5 and len(decoded) == 5 and "random subset of 5" in desc
    np.testing.assert_array_equal(images.pixels, data.generated.materialise().subset(
        [data.generated.ids.index(i) for i in images.ids]).pixels)


def test_corrupt_image_mid_stream_stops_the_audit(tiny_challenge, tmp_path, capsys, small_chunks):
    data = tmp_path / "data"
    shutil.copytree(tiny_challenge, data)
    generated = sorted((data / "train" / "generated").iterdir())
    bad = generated[len(generated) // 2]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated: listed fine, fails when decoded (chunk 3 of 9)
    out = tmp_path / "runs" / "run.csv"
    rc = main(["audit", str(data), "--method", "control-real-only,nearest,nearest-local", "--out", str(out),
               "--report", str(tmp_path / "report"), "--quiet", "--cache-dir", "none", "--bootstrap", "20"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("synthleak: error: ") and f"{bad.name}: corrupt or truncated image" in err[0]
    assert not out.parent.exists() and not (tmp_path / "report").exists()  # nothing written


def test_unreadable_error_is_a_data_error(tmp_path):
    write_images(tmp_path, 3, "g")
    lazy = LazyImageSet.from_folder(tmp_path)
    (tmp_path / "g_2.png").write_bytes(b"not a png")
    with pytest.raises(UnreadableInputError, match="g_2.png: not a readable image"):
        lazy.read([1])


def test_ray_engine_without_ray_is_one_line(tiny_challenge, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(Exception, match=r"--engine ray needs Ray Data \(pip install 'synthleak\[ray\]'\)"):
        run_method("nearest", discover(tiny_challenge), MethodConfig(cache_dir=str(tmp_path), engine="ray"))
    with pytest.raises(Exception, match="--engine 'spark': choose from local, ray"):
        run_method("nearest", discover(tiny_challenge), MethodConfig(cache_dir="none", engine="spark"))


def test_run_json_records_the_neighbour_search(tiny_challenge, tmp_path):
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--method", "nearest", "--out", str(out), "--quiet",
                 "--cache-dir", "none", "--bootstrap", "20", "--search", "exact"]) == 0
    (search,) = json.loads(out.with_suffix(".json").read_text())["neighbour_search"]
    assert search["mode"] == "exact" and search["index"] == "exact-blas" and search["rows"] == 36
