"""Every quick method's scores and run-file predictions, pinned: a refactoring of the method layer must not
change what any method computes. The pins were written by the code before the method-object redesign
(issue 22); a change that is meant to alter a method's scores rewrites them on purpose:

    python tests/test_method_pins.py --write [--trained]

Scores are compared to 1e-5 relative (the last bits of float32 arithmetic may differ between CPUs and
thread counts; a changed method moves scores far more than that), predictions exactly.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from synthleak.config import MethodConfig

PINS = Path(__file__).resolve().parent / "data" / "method_pins.json"
#: every quick method, the calibrations of the two base scores, and two feature spaces besides pixels
CASES = [
    ("nearest", "pixels"), ("nearest-calibrated", "pixels"), ("nearest-local", "pixels"), ("default", "pixels"),
    ("density-ratio", "pixels"), ("domias", "pixels"), ("ensemble", "pixels"), ("control-real-only", "pixels"),
    ("nearest+neighbours", "pixels"), ("nearest+clusters", "pixels"), ("density-ratio+neighbours", "pixels"),
    ("nearest+non-members", "pixels"), ("nearest", "pixels32"), ("nearest+neighbours", "radiomics"),
]
#: the paper's trained methods at toy size (slow: run with -m slow; training is deterministic on one machine and
#: thread count, so these pins are checked where they were written)
TINY = dict(image_size=32, epochs=1, batch_size=8, n_folds=3)
TRAINED = {
    "seed-resnet-radiomics": dict(TINY, base_filters=8),
    "seed-ae-kmeans": dict(TINY), "seed-ae-gmm": dict(TINY), "seed-ae-spectral": dict(TINY),
    "seed-vit-ae": dict(TINY, vit_size="tiny", image_size=64, options={"latent": "32", "rf_trees": "20"}),
    "seed-vit-ae-recon": dict(TINY, vit_size="tiny", image_size=64, options={"latent": "32", "rf_trees": "20"}),
    "seed-dclgan": dict(TINY, base_filters=4, batch_size=4, n_folds=2,
                        options={"resnet_blocks": "2", "nce_patches": "16", "overlap_grid": "2"}),
}


def _data(root: Path):
    """Phantom patients, a noisy-copies generator (no training): members closer, deterministic."""
    from synthleak.bench.build import BenchSpec, build_benchmark
    from synthleak.bench.phantoms import make_phantoms
    from synthleak.data import discover

    images, groups = make_phantoms(40, 2, seed=11)
    spec = BenchSpec(member_fraction=0.5, labelled_fraction=0.4, n_generated_train=60, n_generated_test=20,
                     generator="noisy-copies", seed=11)
    build_benchmark(images, groups, root, spec, quiet=True)
    return discover(root, groups=root / "groups.csv")


def _configs(trained: bool) -> dict[str, tuple[str, MethodConfig]]:
    base = dict(seed=0, quiet=True, cache_dir="none")
    if trained:
        return {name: (name, MethodConfig(**base, **kw)) for name, kw in TRAINED.items()}
    return {f"{m}@{s}": (m, MethodConfig(feature_space=s, calibrate_k=10, **base)) for m, s in CASES}


def _pins_of(data, trained: bool = False) -> dict:
    from synthleak.pipeline import run_audit

    out = {}
    for case, (method, cfg) in _configs(trained).items():
        report = run_audit(data, methods=method, cfg=cfg, n_boot=0, with_verdict=False, check_control=False)
        m = report.methods[0]
        assert m.error is None, f"{case}: {m.error}"
        out[case] = {
            "labelled": [float(f"{v:.9g}") for v in m.result.labelled_scores],
            "test": [float(f"{v:.9g}") for v in m.result.test_scores],
            "predictions": "".join(str(int(v)) for v in m.test_pred),
        }
    return out


@pytest.fixture(scope="module")
def pin_data(tmp_path_factory):
    return _data(tmp_path_factory.mktemp("pins"))


@pytest.fixture(scope="module")
def current(pin_data):
    return _pins_of(pin_data)


def _check(now: dict, pinned: dict, case: str, rtol: float) -> None:
    for part in ("labelled", "test"):
        np.testing.assert_allclose(now[part], pinned[part], rtol=rtol, atol=1e-9, err_msg=f"{case}: {part} scores")
    assert now["predictions"] == pinned["predictions"], f"{case}: run-file predictions changed"


@pytest.mark.parametrize("case", [f"{m}@{s}" for m, s in CASES])
def test_scores_and_predictions_match_the_pins(current, case):
    _check(current[case], json.loads(PINS.read_text())[case], case, rtol=1e-5)


@pytest.mark.slow
def test_trained_methods_match_their_pins(pin_data):
    pinned = json.loads(PINS.with_name("method_pins_trained.json").read_text())
    now = _pins_of(pin_data, trained=True)
    assert set(now) == set(pinned) == set(TRAINED)
    for case in TRAINED:
        _check(now[case], pinned[case], case, rtol=1e-4)


def test_the_pins_are_not_trivial():
    """A pin of constant or chance-level scores would let any change through."""
    from synthleak.metrics import score_metrics

    pins = json.loads(PINS.read_text())
    assert set(pins) == {f"{m}@{s}" for m, s in CASES}
    for case, pin in pins.items():
        assert np.ptp(pin["test"]) > 0 and set(pin["predictions"]) == {"0", "1"}, case
    # the data carry a membership signal, so the pins record methods that work, not noise
    assert np.std(pins["nearest@pixels"]["test"]) > 0
    labels = json.loads(PINS.with_name("method_pins_labels.json").read_text())
    assert score_metrics(np.array(labels), np.array(pins["nearest@pixels"]["test"]))["auc"] > 0.8


if __name__ == "__main__":
    import tempfile

    if sys.argv[1] != "--write" or sys.argv[2:] not in ([], ["--trained"]):
        sys.exit("usage: python tests/test_method_pins.py --write [--trained]")
    with tempfile.TemporaryDirectory() as tmp:
        data = _data(Path(tmp))
        from synthleak.pipeline import test_labels

        y = test_labels(Path(tmp) / "test_labels.csv", data)
        PINS.parent.mkdir(exist_ok=True)
        if sys.argv[2:] == ["--trained"]:
            target = PINS.with_name("method_pins_trained.json")
            target.write_text(json.dumps(_pins_of(data, trained=True), indent=0) + "\n")
        else:
            target = PINS
            PINS.write_text(json.dumps(_pins_of(data), indent=0) + "\n")
            PINS.with_name("method_pins_labels.json").write_text(json.dumps([int(v) for v in y]) + "\n")
    print(f"wrote {target}")
