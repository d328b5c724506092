"""`--set KEY=VALUE`: every key a method reads is declared (typed, defaulted, documented); a key no method of the
audit reads, or a value of the wrong type, is a one-line user error (exit 2) before any work."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from synthleak.cli import main
from synthleak.config import MethodConfig
from synthleak.errors import SynthleakError
from synthleak.features import FEATURE_SPACES, feature_space_options
from synthleak.methods import METHODS, check_method_options, option_classes
from synthleak.options import Options, check_options, option


@dataclass(frozen=True)
class _Example(Options):
    k: int = option(3, "neighbours", minimum=1)
    rate: float = option(0.5, "a share")
    mode: str = option("a", "which", choices=("a", "b"))
    side: int | None = option(None, "optional")


def test_read_casts_defaults_and_checks():
    assert _Example.read({}) == _Example()
    got = _Example.read({"k": "7", "rate": "0.25", "mode": "b", "side": "16", "other": "x"})
    assert (got.k, got.rate, got.mode, got.side) == (7, 0.25, "b", 16)
    with pytest.raises(SynthleakError, match=r"--set k='x': expected an int"):
        _Example.read({"k": "x"})
    with pytest.raises(SynthleakError, match="choose from a, b"):
        _Example.read({"mode": "c"})
    with pytest.raises(SynthleakError, match="at least 1"):
        _Example.read({"k": "0"})


def test_unknown_keys_name_the_valid_ones():
    with pytest.raises(SynthleakError) as e:
        check_options({"no_such_key": "1"}, [_Example], "nearest")
    message = str(e.value)
    assert "\n" not in message and "no_such_key" in message and "valid keys: k, mode, rate, side" in message


def test_every_method_and_space_declares_documented_keys():
    for name in METHODS:
        for cls in option_classes(name, MethodConfig()):
            assert issubclass(cls, Options)
            assert all(": " in line and not line.endswith(": ") for line in cls.describe()), (name, cls)
    for space in FEATURE_SPACES:
        feature_space_options(space)  # every declared class imports


def test_keys_follow_the_methods_that_read_them():
    check_method_options(["nearest"], MethodConfig(options={"k": "3", "pixel_side": "32"}))
    check_method_options(["nearest"], MethodConfig(feature_space="radiomics", options={"glcm_levels": "32"}))
    with pytest.raises(SynthleakError, match="glcm_levels"):
        check_method_options(["nearest"], MethodConfig(options={"glcm_levels": "32"}))  # pixels read no GLCM
    check_method_options(["nearest"], MethodConfig(options={"k_real": "5"}), with_default=True)  # the verdict's
    with pytest.raises(SynthleakError, match="k_real"):
        check_method_options(["nearest"], MethodConfig(options={"k_real": "5"}))
    # an ensemble reads its components' keys, in their spaces
    ens = MethodConfig(options={"ensemble": "nearest@radiomics,nearest-local", "glcm_levels": "16", "k_local": "9"})
    check_method_options(["ensemble"], ens)
    # the clustering methods read the keys of the space they cluster
    check_method_options(["seed-ae-kmeans"], MethodConfig(options={"features": "radiomics", "glcm_levels": "16"}))
    with pytest.raises(SynthleakError, match="expected an int"):
        check_method_options(["nearest"], MethodConfig(options={"k": "three"}))


def test_audit_with_an_unknown_key_exits_2_with_one_line(tiny_challenge, tmp_path):
    out = tmp_path / "run.csv"
    proc = subprocess.run([sys.executable, "-m", "synthleak.cli", "audit", str(tiny_challenge), "--out", str(out),
                           "--set", "no_such_key=1", "--cache-dir", "none"], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_key" in lines[0] and "valid keys: " in lines[0] and "pixel_side" in lines[0]
    assert not out.exists()


def test_audit_with_a_mistyped_value_exits_2(tiny_challenge, tmp_path):
    rc = main(["audit", str(tiny_challenge), "--method", "nearest", "--set", "k=two", "--cache-dir", "none",
               "--quiet"])
    assert rc == 2


def test_methods_details_lists_the_keys(capsys):
    assert main(["methods", "--details", "density-ratio"]) == 0
    out = capsys.readouterr().out
    assert "k_real (int, default 20)" in out and "pixel_side (int, default 64)" in out
    assert main(["methods", "--details", "pixels32"]) == 0
    assert "--set keys: none" in capsys.readouterr().out
    assert main(["methods", "--details", "no-such-method"]) == 2


def test_training_flags_are_settings_of_the_spaces_that_train(tiny_challenge, capsys):
    """--epochs, --image-size, ... live in the options of the spaces and methods that read them: MethodConfig is
    the run context, and a flag no requested method reads is refused like an unknown --set key."""
    from dataclasses import replace

    from synthleak.features.resnet_ae import ResNetAESettings

    cfg = MethodConfig(epochs=3, image_size=32, clusters=4, options={"k": "2"})
    assert cfg.options == {"k": "2", "epochs": "3", "image_size": "32", "clusters": "4"}
    assert replace(cfg, seed=5).options == cfg.options and replace(cfg, epochs=7).options["epochs"] == "7"
    settings = ResNetAESettings.from_config(cfg)
    assert (settings.epochs, settings.image_size) == (3, 32)
    assert {"epochs", "batch_size", "image_size", "base_filters", "weights"} <= {
        k for cls in option_classes("seed-resnet-radiomics", MethodConfig()) for k in cls.keys()}
    assert "clusters" in {k for cls in option_classes("seed-ae-kmeans", MethodConfig()) for k in cls.keys()}
    rc = main(["audit", str(tiny_challenge), "--method", "nearest", "--epochs", "3", "--cache-dir", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("synthleak: error: --epochs 3 (--set epochs='3'): not an option of nearest")
