"""One failing method never takes the audit down: the others, the verdict and every file still come."""
from __future__ import annotations

import json

import pytest

from synthleak.cli import main
from synthleak.data.runfile import read_scores_or_run, validate_run
from synthleak.errors import UnreadableInputError

FAST = ["--quiet", "--bootstrap", "10", "--permutations", "200", "--cache-dir", "none"]


def _boom(*args, **kwargs):
    raise RuntimeError("injected failure 42")


def _stderr_lines(capsys) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    return captured.out, [line for line in captured.err.splitlines() if line.strip()]


@pytest.fixture
def broken_local(monkeypatch):
    """nearest-local raises a bug-like exception (its method object's run)."""
    monkeypatch.setattr("synthleak.methods.density.NearestLocal.run", _boom)


def test_failing_method_is_isolated(tiny_challenge, tmp_path, capsys, broken_local):
    out, rep = tmp_path / "run.csv", tmp_path / "report"
    rc = main(["audit", str(tiny_challenge), "--method", "nearest,nearest-local", "--out", str(out),
               "--report", str(rep), *FAST])
    printed, err = _stderr_lines(capsys)
    assert rc == 0  # another method succeeded
    assert validate_run(tmp_path / "run.nearest.csv", tiny_challenge / "test") == 24
    scores, binary = read_scores_or_run(tmp_path / "run.nearest.scores.csv")
    assert len(scores) == 24 and not binary
    summary = json.loads((tmp_path / "run.nearest.json").read_text())
    assert summary["method"] == "nearest" and "leakage_shown" in summary["verdict"]
    assert (tmp_path / "run.copies.csv").read_text().startswith("synthetic_id,real_id,similarity")
    assert not list(tmp_path.glob("run.nearest-local*"))  # nothing half-done of the failed method
    assert "failed: RuntimeError: injected failure 42" in printed  # its row in the comparison table
    page = (rep / "index.html").read_text()
    assert "failed: RuntimeError: injected failure 42" in page and "id='verdict'" in page
    mentions = [line for line in err if "nearest-local" in line]
    assert len(mentions) == 1 and "RuntimeError: injected failure 42" in mentions[0]
    assert "run.errors.log" in mentions[0]
    assert not any("Traceback" in line for line in err)
    log = (tmp_path / "run.errors.log").read_text()
    assert "Traceback" in log and "RuntimeError: injected failure 42" in log and "method nearest-local" in log


def test_debug_prints_the_traceback(tiny_challenge, tmp_path, capsys, broken_local):
    rc = main(["audit", str(tiny_challenge), "--method", "nearest,nearest-local", "--debug", *FAST])
    _, err = _stderr_lines(capsys)
    assert rc == 0
    assert err[0].startswith("synthleak: error: method nearest-local failed: RuntimeError: injected failure 42")
    assert "Traceback (most recent call last):" in err and "_boom" in "\n".join(err)
    assert not list(tmp_path.iterdir())  # no --out: nothing written, no log


def test_without_out_the_line_points_to_debug(tiny_challenge, capsys, broken_local):
    assert main(["audit", str(tiny_challenge), "--method", "nearest,nearest-local", *FAST]) == 0
    _, err = _stderr_lines(capsys)
    assert len(err) == 1 and "--debug" in err[0] and "Traceback" not in err[0]


def test_failure_in_scoring_is_isolated(tiny_challenge, tmp_path, capsys, monkeypatch):
    import synthleak.pipeline as pipeline

    score = pipeline._score

    def score_or_fail(report, *args, **kwargs):
        if report.name == "nearest-local":
            raise ValueError("injected scoring failure")
        return score(report, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_score", score_or_fail)
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--method", "nearest,nearest-local", "--out", str(out), *FAST]) == 0
    _, err = _stderr_lines(capsys)
    assert len(err) == 1 and "nearest-local" in err[0] and "ValueError: injected scoring failure" in err[0]
    assert (tmp_path / "run.nearest.csv").exists() and not (tmp_path / "run.nearest-local.csv").exists()
    assert "injected scoring failure" in (tmp_path / "run.errors.log").read_text()


def test_failing_default_recipe_means_no_verdict_but_the_rest(tiny_challenge, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("synthleak.methods.adaptive.run_adaptive", _boom)  # the default recipe's function
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--method", "nearest", "--out", str(out), *FAST]) == 0
    printed, err = _stderr_lines(capsys)
    assert validate_run(out, tiny_challenge / "test") == 24
    summary = json.loads((tmp_path / "run.json").read_text())
    assert "injected failure 42" in summary["verdict"]["error"]
    assert not (tmp_path / "run.copies.csv").exists()
    assert "warning: no verdict" in printed and not printed.startswith("verdict:")
    assert len(err) == 1 and "default recipe" in err[0] and "Traceback" not in err[0]
    assert "Traceback" in (tmp_path / "run.errors.log").read_text()


def test_every_method_failing_exits_1(tiny_challenge, tmp_path, capsys, monkeypatch, broken_local):
    monkeypatch.setattr("synthleak.methods.nearest.Nearest.run", _boom)
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--method", "nearest,nearest-local", "--out", str(out), *FAST]) == 1
    _, err = _stderr_lines(capsys)
    failed = [line for line in err if line.startswith("synthleak: error: method")]
    assert len(failed) == 2 and not any("Traceback" in line for line in err)
    assert not list(tmp_path.glob("run.nearest*"))
    assert (tmp_path / "run.errors.log").read_text().count("injected failure 42") >= 2


def test_single_method_bug_is_one_line_and_exit_1(tiny_challenge, tmp_path, capsys, broken_local):
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--method", "nearest-local", "--out", str(out), *FAST]) == 1
    _, err = _stderr_lines(capsys)
    assert len(err) == 1 and "nearest-local" in err[0] and "injected failure 42" in err[0]
    assert not out.exists() and "Traceback" in (tmp_path / "run.errors.log").read_text()


def test_user_errors_still_exit_2_and_write_nothing(tiny_challenge, tmp_path, capsys, monkeypatch):
    def unreadable(*args, **kwargs):
        raise UnreadableInputError("broken.png: cannot be decoded")

    monkeypatch.setattr("synthleak.methods.density.NearestLocal.run", unreadable)
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--method", "nearest,nearest-local", "--out", str(out), *FAST]) == 2
    _, err = _stderr_lines(capsys)
    assert err == ["synthleak: error: broken.png: cannot be decoded"] and not list(tmp_path.iterdir())
    # the errors log is an output like the others: an existing one is refused before any work without --force
    (tmp_path / "run.errors.log").write_text("keep\n")
    monkeypatch.setattr("synthleak.methods.density.NearestLocal.run", _boom)
    args = ["audit", str(tiny_challenge), "--method", "nearest,nearest-local", "--out", str(out), *FAST]
    assert main(args) == 2
    _, err = _stderr_lines(capsys)
    assert len(err) == 1 and "run.errors.log: already exists" in err[0]
    assert [p.name for p in tmp_path.iterdir()] == ["run.errors.log"]
    assert main(args + ["--force"]) == 0
    assert "injected failure 42" in (tmp_path / "run.errors.log").read_text()
