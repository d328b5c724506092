"""The command line end to end on phantom data: outputs, determinism, errors as one line."""
from __future__ import annotations

import json
import subprocess
import sys


from synthleak.cli import main
from synthleak.data.runfile import validate_run


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthleak.cli", *args], capture_output=True, text=True)


def test_audit_end_to_end(tiny_challenge, tmp_path, capsys):
    out = tmp_path / "run.csv"
    rc = main(["audit", str(tiny_challenge), "--method", "nearest", "--out", str(out), "--labels",
               str(tiny_challenge / "test_labels.csv"), "--groups", str(tiny_challenge / "groups.csv"),
               "--bootstrap", "50", "--cache-dir", "none", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert validate_run(out, tiny_challenge / "test") == 24
    assert "CV AUC" in printed and "test AUC" in printed and "control-real-only (reference)" in printed
    scores = (tmp_path / "run.scores.csv").read_text().splitlines()
    assert len(scores) == 24 and all("," in r for r in scores)
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["method"] == "nearest" and summary["test"]["auc"]["value"] > 0.8
    # metrics are written for reading: at most 4 significant digits (no 0.43506249999999963)
    metric_floats = [v for section in ("cv_on_labelled", "test") for metric in summary[section].values()
                     for v in (metric["value"], metric["low"], metric["high"]) if isinstance(v, float)]
    assert metric_floats and all(float(f"{v:.4g}") == v for v in metric_floats)


def test_same_seed_same_files(tiny_challenge, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}.csv"
        assert main(["audit", str(tiny_challenge), "--method", "nearest-calibrated", "--out", str(out),
                     "--bootstrap", "20", "--quiet", "--cache-dir", str(tmp_path / f"cache{k}")]) == 0
        outs.append((out.read_bytes(), (tmp_path / f"r{k}.scores.csv").read_bytes()))
    assert outs[0] == outs[1]


def test_multiple_methods_write_one_file_each(tiny_challenge, tmp_path):
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--method", "nearest,control-real-only", "--out", str(out),
                 "--bootstrap", "20", "--quiet", "--cache-dir", "none"]) == 0
    assert (tmp_path / "run.nearest.csv").exists() and (tmp_path / "run.control-real-only.csv").exists()


def test_refuses_overwrite_before_working(tiny_challenge, tmp_path):
    out = tmp_path / "run.csv"
    out.write_text("keep\n")
    r = run_cli("audit", str(tiny_challenge), "--out", str(out), "--quiet")
    assert r.returncode == 2 and "already exists (use --force" in r.stderr
    assert "Traceback" not in r.stderr and out.read_text() == "keep\n"


def test_bad_input_is_one_line_and_writes_nothing(tiny_challenge, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_challenge, data)
    (data / "test" / "real_unknown" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "run.csv"
    r = run_cli("audit", str(data), "--out", str(out), "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "broken.png" in r.stderr
    assert not out.exists()


def test_evaluate_and_validate_commands(tiny_challenge, tmp_path, capsys):
    out = tmp_path / "run.csv"
    main(["audit", str(tiny_challenge), "--out", str(out), "--quiet", "--bootstrap", "20", "--cache-dir", "none"])
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run.scores.csv"), "--labels",
                 str(tiny_challenge / "test_labels.csv"), "--bootstrap", "50"]) == 0
    printed = capsys.readouterr().out
    assert "auc" in printed and "tpr@1%fpr" in printed and "[" in printed
    assert main(["evaluate", str(out), "--labels", str(tiny_challenge / "test_labels.csv"), "--bootstrap", "50"]) == 0
    assert "kappa" in capsys.readouterr().out
    assert main(["validate", str(out), "--test", str(tiny_challenge / "test")]) == 0
    (tmp_path / "bad.csv").write_text("real_unknown_0001,1\n")
    assert main(["validate", str(tmp_path / "bad.csv"), "--test", str(tiny_challenge / "test")]) == 2


def test_methods_lists_everything(capsys):
    from synthleak.methods import METHODS

    assert main(["methods"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in METHODS) and "feature spaces" in printed


def test_unknown_method_and_missing_data_are_user_errors(tmp_path):
    r = run_cli("audit", str(tmp_path / "nope"), "--method", "nearest")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("audit", str(tmp_path), "--method", "nonsense")
    assert r.returncode == 2 and "unknown method" in r.stderr


def test_unlabelled_audit_uses_member_rate(tiny_challenge, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_challenge / "train" / "generated", data / "generated")
    shutil.copytree(tiny_challenge / "test" / "real_unknown", data / "real_unknown")
    assert main(["audit", str(data), "--out", str(tmp_path / "r.csv"), "--quiet", "--member-rate", "0.25",
                 "--cache-dir", "none"]) == 0
    preds = [int(l.split(",")[1]) for l in (tmp_path / "r.csv").read_text().splitlines()]
    assert sum(preds) == 6  # 25% of 24
    assert "expected member rate" in capsys.readouterr().out


def test_library_api(tiny_challenge):
    from synthleak import audit
    from synthleak.config import MethodConfig

    report = audit(tiny_challenge, methods="nearest", cfg=MethodConfig(cache_dir="none", quiet=True), n_boot=20,
                   labels=tiny_challenge / "test_labels.csv")
    assert report.by_name("nearest").test["auc"].value > 0.8


def test_report_has_metrics_plots_and_evidence(tiny_challenge, tmp_path):
    rep = tmp_path / "report"
    assert main(["audit", str(tiny_challenge), "--method", "nearest", "--out", str(tmp_path / "r.csv"), "--labels",
                 str(tiny_challenge / "test_labels.csv"), "--report", str(rep), "--quiet", "--bootstrap", "20",
                 "--cache-dir", "none"]) == 0
    page = (rep / "index.html").read_text()
    assert "test AUC" in page and "nearest_roc.png" in page and "nearest_evidence_1_real.png" in page
    assert "synthetic #1" in page and "pixel distance" in page  # every evidence tile is captioned
    assert (rep / "nearest_evidence_1_syn1.png").stat().st_size > 1000
    # a non-empty report folder is not overwritten without --force
    assert main(["audit", str(tiny_challenge), "--out", str(tmp_path / "r2.csv"), "--report", str(rep),
                 "--quiet"]) == 2


def test_bad_decision_options_are_one_line_errors(tiny_challenge, tmp_path):
    r = run_cli("audit", str(tiny_challenge), "--decision", "fpr", "--target-fpr", "5", "--quiet")
    assert r.returncode == 2 and "--target-fpr" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("audit", str(tiny_challenge), "--method", "nearest,domias", "--out", str(tmp_path / "r.csv"),
                "--scores", str(tmp_path / "s.csv"), "--quiet")
    assert r.returncode == 2 and "--scores needs" in r.stderr and not list(tmp_path.iterdir())


def test_outputs_have_normal_permissions(tiny_challenge, tmp_path):
    import os
    import stat

    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--out", str(out), "--quiet", "--bootstrap", "10",
                 "--cache-dir", "none"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_build_bench_force_replaces(tmp_path):
    import cv2

    from synthleak.bench.phantoms import make_phantoms

    images, _ = make_phantoms(5, 2)
    (tmp_path / "real").mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(tmp_path / "real" / f"s{i}.png"), im)
    args = ["build-bench", str(tmp_path / "real"), "--out", str(tmp_path / "b"), "--n-generated", "6",
            "--generator", "noisy-copies", "--member-fraction", "0.5", "--labelled-fraction", "0.5", "--quiet"]
    assert main(args) == 0
    assert main(args) == 2  # exists: refused without --force
    assert main(args + ["--force"]) == 0
    assert len(list((tmp_path / "b" / "train" / "generated").iterdir())) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_method_all_runs_every_method_with_cpu_sized_options(tiny_challenge, tmp_path, capsys):
    from synthleak.methods import METHODS

    out = tmp_path / "run.csv"
    rc = main(["audit", str(tiny_challenge), "--method", "all", "--out", str(out), "--groups",
               str(tiny_challenge / "groups.csv"), "--labels", str(tiny_challenge / "test_labels.csv"),
               "--epochs", "1", "--image-size", "32", "--vit-size", "tiny", "--base-filters", "4",
               "--max-train-images", "16", "--set", "nce_patches=16", "--bootstrap", "10", "--quiet",
               "--cache-dir", "none"])
    printed = capsys.readouterr().out
    assert rc == 0
    for name in METHODS:
        assert validate_run(tmp_path / f"run.{name}.csv", tiny_challenge / "test") == 24, name
        assert any(line.startswith(name) for line in printed.splitlines()), name
    assert "skipped" not in printed


def test_default_audit_runs_the_recipe_with_verdict_shift_and_copies(tiny_challenge, tmp_path, capsys):
    import json

    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--out", str(out), "--quiet", "--bootstrap", "20",
                 "--permutations", "500", "--cache-dir", "none"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("verdict: leakage ")
    summary = json.loads((tmp_path / "run.json").read_text())
    chosen = summary["recipe"]["chosen"]
    assert summary["method"] == "default" and chosen in summary["recipe"]["candidates"]
    assert summary["calibration"] == ("neighbours" if chosen.endswith("+neighbours") else "none")
    assert chosen in summary["recipe"]["why"] and set(summary["recipe"]["separation"]) == set(
        summary["recipe"]["candidates"])
    assert summary["feature_space"] == "pixels" and summary["decision_rule"] == "kappa"
    assert set(summary["shift"]) >= {"auc", "low", "high", "shifted"}
    assert {"leakage_shown", "p_value", "alpha", "test", "permutations", "copy_share", "copy_share_ci", "ct",
            "authenticity", "memorised_share"} <= set(summary["verdict"])
    assert summary["verdict"]["permutations"] == 500
    copies = (tmp_path / "run.copies.csv").read_text().splitlines()
    assert copies[0] == "synthetic_id,real_id,similarity" and len(copies) - 1 == summary["verdict"]["copies"]
    # the copies file, like every output, is never overwritten without --force
    (tmp_path / "again.copies.csv").write_text("keep")
    assert main(["audit", str(tiny_challenge), "--out", str(tmp_path / "again.csv"), "--quiet",
                 "--cache-dir", "none"]) == 2
    assert (tmp_path / "again.copies.csv").read_text() == "keep" and not (tmp_path / "again.csv").exists()


def test_calibrate_option_and_variant_names(tiny_challenge, tmp_path):
    import json

    assert main(["audit", str(tiny_challenge), "--method", "nearest,nearest+clusters", "--calibrate", "neighbours",
                 "--out", str(tmp_path / "r.csv"), "--quiet", "--bootstrap", "20", "--cache-dir", "none"]) == 0
    plain = json.loads((tmp_path / "r.nearest.json").read_text())
    variant = json.loads((tmp_path / "r.nearest+clusters.json").read_text())
    assert plain["calibration"] == "neighbours" and variant["calibration"] == "clusters"
    r = run_cli("audit", str(tiny_challenge), "--method", "nearest+sideways", "--quiet")
    assert r.returncode == 2 and "unknown calibration" in r.stderr and "Traceback" not in r.stderr
