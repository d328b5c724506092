"""Layout discovery, image conversion and every bad input the data layer must reject in one line."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from synthleak.data import discover, load_folder, load_image
from synthleak.errors import DataError
from helpers import make_layout, write_images


def test_flat_layout(tmp_path):
    make_layout(tmp_path)
    d = discover(tmp_path)
    assert len(d.generated) == 6 and len(d.real_used) == 4 and len(d.real_not_used) == 4
    assert len(d.real_unknown) == 6 and d.test_generated is None
    images, y = d.labelled()
    assert y.tolist() == [1] * 4 + [0] * 4 and images.pixels.shape == (8, 256, 256)


def test_train_test_subfolders(tiny_challenge):
    d = discover(tiny_challenge)
    assert d.test_generated is not None and len(d.synthetic("all")) == len(d.generated) + len(d.test_generated)
    assert len(d.synthetic("train")) == len(d.generated)


def test_explicit_train_test(tiny_challenge):
    d = discover(train=tiny_challenge / "train", test=tiny_challenge / "test")
    assert d.has_labelled and len(d.real_unknown) == 24


def test_labelled_reals_optional(tmp_path):
    write_images(tmp_path / "generated", 3)
    write_images(tmp_path / "real_unknown", 3, "u")
    d = discover(tmp_path)
    assert not d.has_labelled
    with pytest.raises(DataError, match="labelled reals"):
        d.labelled()


def test_groups_make_cv_group_aware(tiny_audit_data):
    groups = tiny_audit_data.labelled_groups()
    assert groups is not None and len(set(groups)) < len(groups)


def test_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.zeros((256, 256), np.uint8)).save(tmp_path / f"img{i}.png")
    assert load_folder(tmp_path).ids == ["img1", "img2", "img10"]


@pytest.mark.parametrize("mode", ["P", "RGB", "RGBA", "LA"])
def test_modes_converted_to_gray(tmp_path, mode):
    rgb = np.zeros((256, 256, 3), np.uint8)
    rgb[..., 0] = 200
    img = Image.fromarray(rgb).convert(mode)
    img.save(tmp_path / "x.png")
    arr, converted, resized = load_image(tmp_path / "x.png")
    assert arr.dtype == np.uint8 and arr.shape == (256, 256) and converted == mode and not resized
    assert abs(int(arr.mean()) - int(Image.fromarray(rgb).convert("L").getpixel((0, 0)))) <= 1


def test_sixteen_bit_scaled(tmp_path):
    arr16 = np.full((256, 256), 65535, np.uint16)
    arr16[0, 0] = 0
    Image.fromarray(arr16).save(tmp_path / "x.png")
    arr, converted, _ = load_image(tmp_path / "x.png")
    assert converted is not None and arr.max() == 255 and arr[0, 0] == 0


def test_jpeg_loaded(tmp_path):
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(tmp_path / "x.jpg")
    assert abs(int(load_image(tmp_path / "x.jpg")[0].mean()) - 128) <= 2


def test_wrong_size_resized_with_warning(tmp_path):
    write_images(tmp_path, 2, size=100)
    with pytest.warns(UserWarning, match="2 of 2 images were not 256x256"):
        s = load_folder(tmp_path)
    assert s.pixels.shape == (2, 256, 256) and s.resized == 2


@pytest.mark.parametrize("problem", ["corrupt", "empty", "missing", "non-image", "duplicate", "truncated"])
def test_bad_input_names_file(tmp_path, problem):
    make_layout(tmp_path)
    folder = tmp_path / "real_unknown"
    if problem == "corrupt":
        bad = folder / "bad.png"
        bad.write_bytes(b"not a png at all")
        match = "bad.png: not a readable image"
    elif problem == "truncated":
        bad = folder / "unk_1.png"
        bad.write_bytes(bad.read_bytes()[:200])
        match = "unk_1.png: corrupt or truncated"
    elif problem == "empty":
        for p in folder.iterdir():
            p.unlink()
        match = "real_unknown: folder has no images"
    elif problem == "missing":
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        match = "real_unknown: folder does not exist"
    elif problem == "non-image":
        (folder / "notes.txt").write_text("hello")
        match = "notes.txt: not an image file"
    else:
        Image.fromarray(np.zeros((256, 256), np.uint8)).save(folder / "unk_1.jpg")
        match = "duplicate image id 'unk_1'"
    with pytest.raises(DataError, match=match):
        discover(tmp_path)


def test_duplicate_id_across_real_folders(tmp_path):
    make_layout(tmp_path)
    write_images(tmp_path / "real_unknown", 1, "used")
    with pytest.raises(DataError, match="duplicate image id 'used_1'"):
        discover(tmp_path)


def test_half_labelled_is_an_error(tmp_path):
    make_layout(tmp_path)
    for p in (tmp_path / "real_not_used").iterdir():
        p.unlink()
    (tmp_path / "real_not_used").rmdir()
    with pytest.raises(DataError, match="real_not_used: folder missing"):
        discover(tmp_path)


def test_no_layout(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(DataError, match="no challenge layout"):
        discover(tmp_path)


def test_identical_test_and_labelled_images_warn(tmp_path):
    make_layout(tmp_path)
    (tmp_path / "real_unknown" / "copy.png").write_bytes((tmp_path / "real_used" / "used_1.png").read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        discover(tmp_path)
    assert any("pixel-identical" in str(w.message) for w in caught)


def test_groups_keep_dotted_ids_and_warn_on_missing(tmp_path):
    make_layout(tmp_path)
    groups = tmp_path / "groups.csv"
    groups.write_text("used_1.png,p1\nused_2,p1\n")
    with pytest.warns(UserWarning, match="6 of 8 labelled reals have no group"):
        d = discover(tmp_path, groups=groups)
    assert d.labelled_groups()[0] == "p1"
    groups.write_text("nobody,p1\n")
    with pytest.raises(DataError, match="no labelled real image id appears"):
        discover(tmp_path, groups=groups)
    from synthleak.data.layout import read_groups

    groups.write_text("IMG.0001,p1\n")
    assert read_groups(groups) == {"IMG.0001": "p1"}


def test_labelled_view_is_built_once_and_follows_the_sets():
    from synthleak.data.images import ImageSet
    from synthleak.data.layout import AuditData

    rng = np.random.default_rng(0)
    make = lambda n, p: ImageSet.from_arrays(rng.integers(0, 255, (n, 8, 8), dtype=np.uint8), [f"{p}{i}" for i in range(n)])
    data = AuditData(generated=make(3, "g"), real_used=make(2, "u"), real_not_used=make(3, "n"))
    images, y = data.labelled()
    again, y_again = data.labelled()
    assert again is images and y_again is y and list(y) == [1, 1, 0, 0, 0]
    data.real_used = make(4, "v")
    images, y = data.labelled()
    assert images.ids[:4] == ["v0", "v1", "v2", "v3"] and list(y) == [1] * 4 + [0] * 3
