"""Run-file and score-file format, round trip, validation and atomic no-overwrite writes."""
from __future__ import annotations

import pytest

from synthleak.data.runfile import (atomic_write_text, read_labels, read_scores_or_run, run_text, scores_text,
                                    validate_run)
from synthleak.errors import DataError, OutputExistsError
from helpers import write_images


def test_run_text_natural_order_no_header():
    assert run_text(["a10", "a2", "a1"], [1, 0, 1]) == "a1,1\na2,0\na10,1\n"


def test_round_trip(tmp_path):
    ids = ["x1", "x2", "x3"]
    p = atomic_write_text(tmp_path / "s.csv", scores_text(ids, [0.5, -1.25, 3.0]))
    values, binary = read_scores_or_run(p)
    assert values == {"x1": 0.5, "x2": -1.25, "x3": 3.0} and not binary
    p2 = atomic_write_text(tmp_path / "r.csv", run_text(ids, [1, 0, 1]))
    values, binary = read_scores_or_run(p2)
    assert binary and values["x2"] == 0


def test_no_overwrite_without_force(tmp_path):
    p = atomic_write_text(tmp_path / "r.csv", "a,1\n")
    with pytest.raises(OutputExistsError, match="already exists"):
        atomic_write_text(p, "a,0\n")
    assert p.read_text() == "a,1\n"
    atomic_write_text(p, "a,0\n", force=True)
    assert p.read_text() == "a,0\n"
    assert [x.name for x in tmp_path.iterdir()] == ["r.csv"]  # no temporary files left


def test_validate(tmp_path):
    write_images(tmp_path / "test" / "real_unknown", 3, "u")
    good = tmp_path / "good.csv"
    good.write_text("u_1,1\nu_2,0\nu_3.png,1\n")
    assert validate_run(good, tmp_path / "test") == 3
    cases = {
        "u_1,1\nu_2,0\n": "1 test image has no prediction",
        "u_1,1\nu_2,0\nu_3,2\n": "prediction must be 0 or 1",
        "u_1,1\nu_1,0\nu_3,1\n": "appears twice",
        "u_1,1\nu_2,0\nzzz,1\n": "not an image of",
        "u_1;1\n": "expected '<id>,<value>'",
    }
    for text, match in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(DataError, match=match):
            validate_run(bad, tmp_path / "test")


def test_labels_accept_file_names_and_reject_bad_values(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("a.png,1\nb,0\n")
    assert read_labels(p) == {"a": 1, "b": 0}
    p.write_text("a,2\n")
    with pytest.raises(DataError, match="label must be 0 or 1"):
        read_labels(p)
    p.write_text("a,1\na.png,0\n")
    with pytest.raises(DataError, match="duplicate id 'a'"):
        read_labels(p)
