"""What a newcomer meets on a fresh clone: help texts, messages, the demo's last lines, progress lines."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from synthleak.cli import build_parser, main
from synthleak.errors import DataError

README = Path(__file__).resolve().parents[1] / "README.md"


def _options():
    """(command, action) for every option and argument of every command."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            yield name, action


def test_every_option_has_help_that_shows_its_default():
    missing, no_default = [], []
    for command, action in _options():
        label = f"{command} {'/'.join(action.option_strings) or action.dest}"
        if not action.help:
            missing.append(label)
            continue
        if action.option_strings and "default" not in action.help and not action.required:
            no_default.append(label)
        if action.default not in (None, False, argparse.SUPPRESS) and "default" in action.help:
            shown = str(action.default)
            assert shown in action.help or f"{action.default:g}" in action.help \
                if isinstance(action.default, float) else shown in action.help, (label, action.help)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not say the default: {no_default}"


@pytest.mark.parametrize("option", ["--target-fpr", "--batch-size", "--base-filters", "--vit-size", "--alpha",
                                    "--permutations", "--bootstrap", "--folds", "--member-rate"])
def test_named_audit_options_say_their_default(option):
    action = next(a for c, a in _options() if c == "audit" and option in a.option_strings)
    assert action.help and "default" in action.help


def test_calibrate_accepts_the_american_spelling():
    args = build_parser().parse_args(["audit", "DATA", "--calibrate", "neighbors"])
    assert args.calibrate == "neighbours"


def test_readme_and_help_agree_on_decision_auto():
    action = next(a for c, a in _options() if c == "audit" and "--decision" in a.option_strings)
    phrase = "kappa, and for the default recipe rate at the labelled member rate when the shift check fires"
    assert phrase in " ".join(action.help.split())
    assert phrase in " ".join(README.read_text().split())


def test_methods_lists_the_default_first(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "default" and "what audit runs without --method" in lines[1]


def test_validate_given_the_data_root_names_the_folder_it_expects(tiny_challenge, tmp_path, capsys):
    run = tmp_path / "run.csv"
    run.write_text("x,1\n")
    assert main(["validate", str(run), "--test", str(tiny_challenge)]) == 2
    err = capsys.readouterr().err
    assert f"--test {tiny_challenge / 'test'}" in err and "real_unknown/" in err
    assert main(["validate", str(run), "--test", str(tiny_challenge / "train")]) == 2
    assert "no real_unknown/ folder here" in capsys.readouterr().err


def test_one_missing_prediction_is_singular(tiny_challenge, tmp_path):
    from synthleak.data.runfile import validate_run

    ids = sorted(p.stem for p in (tiny_challenge / "test" / "real_unknown").iterdir())
    run = tmp_path / "run.csv"
    run.write_text("".join(f"{i},1\n" for i in ids[1:]))
    with pytest.raises(DataError, match="1 test image has no prediction"):
        validate_run(run, tiny_challenge / "test")


def test_audit_without_out_says_nothing_was_saved(tiny_challenge, tmp_path, capsys):
    assert main(["audit", str(tiny_challenge), "--quiet", "--bootstrap", "20", "--permutations", "200",
                 "--cache-dir", "none"]) == 0
    printed = capsys.readouterr().out
    assert "nothing saved: no --out was given" in printed
    lines = printed.splitlines()
    assert lines[0].startswith("verdict: leakage ") and lines[1].startswith("member-closer: ")


def test_verdict_json_numbers_are_rounded(tiny_challenge, tmp_path):
    out = tmp_path / "run.csv"
    assert main(["audit", str(tiny_challenge), "--out", str(out), "--quiet", "--bootstrap", "20",
                 "--permutations", "200", "--cache-dir", "none"]) == 0
    verdict = json.loads((tmp_path / "run.json").read_text())["verdict"]
    assert {"member_closer_share", "member_closer_ci", "member_closer_p"} <= verdict.keys()
    text = json.dumps({k: v for k, v in verdict.items() if k != "copy_threshold"})
    digits = [len(m.group(1).lstrip("0")) for m in re.finditer(r"\d\.(\d+)", text)]
    assert digits and max(digits) <= 4, text


def test_demo_ends_with_the_audit_to_run_next(tmp_path):
    from synthleak.demo import next_command

    text = next_command(tmp_path / "data", tmp_path)
    command = text.splitlines()[-1].split()
    assert command[:3] == ["synthleak", "audit", str(tmp_path / "data")]
    assert command[command.index("--groups") + 1] == str(tmp_path / "data" / "groups.csv")
    assert command[command.index("--labels") + 1] == str(tmp_path / "data" / "test_labels.csv")
    args = build_parser().parse_args(command[1:])  # a command the CLI accepts as printed
    assert args.out and args.report


def _engine(epochs=10):
    import torch
    from torch import nn

    from synthleak.models.engine import IndexBatches, TrainingEngine

    model = nn.Linear(2, 1)
    return TrainingEngine(lambda batch, engine: {"loss": torch.tensor(0.0)}, modules={"m": model},
                          batches=IndexBatches(4, 2), epochs=epochs, label="toy")


def test_progress_line_time_per_epoch_and_eta_agree(capsys):
    engine = _engine(epochs=10)
    engine.history = [{}] * 4  # four epochs done
    # a slow first epoch, then fast ones: the ETA must follow the s/epoch shown, not an older mean
    engine._log_epoch({"epoch": 4, "loss": 0.0, "seconds": 10.0, "items_per_s": 1.0}, [100.0, 10.0, 10.0, 10.0],
                      "epochs")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    per_epoch = float(re.search(r"([\d.]+)s/epoch", line).group(1))
    minutes, seconds = map(int, re.search(r"ETA (\d+)m(\d+)s", line).groups())
    assert 60 * minutes + seconds == pytest.approx(6 * per_epoch, abs=1)
    assert "mean of the last 4" in line
