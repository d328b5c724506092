"""A leak ladder: one generator trained once on one member split, sampled at several training lengths.

`build_ladder` trains the generator (ddpm or dcgan) to each rung's step count in turn, continuing
the same training run (rung k + 1 continues rung k's weights, optimiser and random streams), and
writes one complete benchmark per rung, `OUT/rung-<steps>/` in the challenge layout with
`test_labels.csv`, all sharing one member split (the one any benchmark built with the same seed has,
whatever its generator), so leakage grows along the ladder while nothing else changes. Each rung's
`SOURCE.json` and `OUT/ladder.json` carry the memorisation meter (bench/meter.py).

Resuming: the build works in `OUT.partial/` (a training state saved every `steps_per_epoch` steps,
finished rungs as complete folders) and moves the rungs into `OUT` only at the end. Re-running the
same command after an interruption continues the training where it stopped, keeps finished rungs,
and ends with the same files an uninterrupted build writes. A partial build made with other inputs
or settings is discarded. Rung step counts are kept on epoch ends (the epoch length divides every
rung), so a rung's weights do not depend on which other rungs were asked for.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, SynthleakError
from ..fsutil import atomic_output
from ..runtime import log, verbosity
from .build import (BenchSpec, build_benchmark, check_generator, check_members, draw_split, make_generator,
                    refuse_existing)
from .generator import content_digest, resize_stack
from .meter import memorisation_meter, rung_audit

#: generators trained in optimiser steps, which a ladder can stop and continue
LADDER_GENERATORS = ("ddpm", "dcgan")
#: epoch length (resume granularity) of the dcgan in a ladder; ddpm takes its preset's
DCGAN_STEPS_PER_EPOCH = 50
PARTIAL_MARKER = "LADDER_KEY"
SAMPLE_SIDE = 256


def parse_rungs(rungs: str | list[int]) -> list[int]:
    """'500,1500,4000' -> [500, 1500, 4000]: positive, strictly increasing step counts."""
    if isinstance(rungs, str):
        try:
            values = [int(v) for v in rungs.split(",") if v.strip()]
        except ValueError:
            raise SynthleakError(f"--rungs {rungs!r}: expected comma-separated step counts, e.g. 500,1500,4000") \
                from None
    else:
        values = [int(v) for v in rungs]
    if not values:
        raise SynthleakError(f"--rungs {rungs!r}: no step counts given")
    if any(v <= 0 for v in values):
        raise SynthleakError(f"--rungs {rungs!r}: step counts must be positive")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise SynthleakError(f"--rungs {rungs!r}: step counts must be strictly increasing")
    return values


def ladder_epoch_length(rungs: list[int], target: int) -> int:
    """The largest divisor of every rung that is at most `target`: rungs then fall on epoch ends."""
    common = math.gcd(*rungs)
    return max(d for d in range(1, min(common, target) + 1) if common % d == 0)


def check_ladder(spec: BenchSpec, rungs: str | list[int]) -> list[int]:
    check_generator(spec)
    if spec.generator not in LADDER_GENERATORS:
        raise SynthleakError(f"--rungs: the {spec.generator} generator is not trained in steps "
                             f"(use --generator {' or '.join(LADDER_GENERATORS)})")
    return parse_rungs(rungs)


def _ladder_key(images: np.ndarray, groups: np.ndarray, label_groups, spec: BenchSpec, generator,
                device: str) -> str:
    """What a partial build depends on: the inputs, the split and generator settings, the device kind."""
    settings = {k: v for k, v in asdict(spec).items() if k not in ("generator_epochs", "generator_steps")}
    described = {"side": generator.side}
    if hasattr(generator, "config"):
        described["config"] = generator.config.as_record()
    payload = json.dumps({"spec": settings, "generator": described, "device": str(device).split(":")[0],
                          "groups": [str(g) for g in groups],
                          "label_groups": None if label_groups is None else [str(g) for g in label_groups]},
                         sort_keys=True)
    return hashlib.sha1((payload + content_digest(images)).encode()).hexdigest()[:20]


def _open_partial(partial: Path, key: str) -> None:
    """Create the work folder, or keep it when it holds this build's earlier progress."""
    marker = partial / PARTIAL_MARKER
    if partial.exists():
        if not marker.exists():
            if partial.is_dir() and not any(partial.iterdir()):
                partial.rmdir()
            else:
                raise DataError(f"{partial}: exists and is not a synthleak partial build; move it away")
        elif marker.read_text().strip() == key:
            log(f"ladder: resuming the partial build in {partial}")
            return
        else:
            log(f"ladder: discarding {partial} (made with other inputs or settings)")
            shutil.rmtree(partial)
    partial.mkdir(parents=True)
    marker.write_text(key + "\n")


def _write_json(path: Path, payload: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def _finished_rung(folder: Path, key: str) -> dict | None:
    """The ladder entry of a rung folder finished by this build, else None."""
    source = folder / "SOURCE.json"
    if not source.exists():
        return None
    try:
        summary = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary.get("ladder_entry") if summary.get("ladder_key") == key else None


@dataclass
class _Ladder:
    """Everything a rung is built from (one build, many rungs)."""

    images: np.ndarray
    groups: np.ndarray
    label_groups: np.ndarray | None
    member: np.ndarray
    spec: BenchSpec
    rungs: list[int]
    per_epoch: int
    key: str
    device: str
    n_boot: int

    @property
    def n_generated(self) -> int:
        return self.spec.n_generated_train + self.spec.n_generated_test


def build_ladder(images: np.ndarray, groups: np.ndarray, out: Path, spec: BenchSpec, rungs: str | list[int],
                 device: str = "cpu", quiet: bool = False, force: bool = False,
                 label_groups: np.ndarray | None = None, diffusion=None, n_boot: int = 1000) -> dict:
    """Write OUT/rung-<steps>/ (one benchmark per rung) and OUT/ladder.json; returns ladder.json's content.

    `diffusion` (a models.diffusion.DiffusionConfig) replaces the ddpm preset's settings; `n_boot`:
    bootstrap resamples of the meter's AUC CIs.
    """
    with verbosity(quiet):
        rungs = check_ladder(spec, rungs)
        out = Path(out)
        refuse_existing(out, force)
        check_members(spec, groups, label_groups)
        member, _, _ = draw_split(groups, spec, label_groups)
        partial = out.parent / f"{out.name}.partial"
        generator = make_generator(spec, device, state_path=partial / "train.state", diffusion=diffusion)
        key = _ladder_key(images, groups, label_groups, spec, generator, device)
        out.parent.mkdir(parents=True, exist_ok=True)
        _open_partial(partial, key)
        config = getattr(generator, "config", None)
        per_epoch = ladder_epoch_length(rungs, config.steps_per_epoch if config else DCGAN_STEPS_PER_EPOCH)
        ladder = _Ladder(images, groups, label_groups, member, spec, rungs, per_epoch, key, device, n_boot)
        entries: list[dict] = []
        t_start = time.perf_counter()
        for i, steps in enumerate(rungs):
            folder = partial / f"rung-{steps}"
            entry = _finished_rung(folder, key)
            if entry is not None:
                log(f"ladder: rung {i + 1}/{len(rungs)} ({steps} steps) already built")
            else:
                entry = _build_rung(ladder, generator, folder, steps)
            entries.append(entry)
            _log_ladder_progress(entries, rungs, time.perf_counter() - t_start)
        summary = {
            "generator": spec.generator, "seed": spec.seed, "rungs": rungs, "steps_per_epoch": per_epoch,
            "members": int(member.sum()), "member_groups": int(len(np.unique(groups[member]))),
            "non_members": int((~member).sum()), "n_generated": ladder.n_generated,
            "image_size": generator.side, **({"preset": config.name} if config else {}),
            "ladder": entries,
        }
        _publish(partial, out, rungs, summary, force)
        log(f"ladder written to {out}: " + ", ".join(
            f"{e['steps']} steps: memorised {e['memorised_share']:.3f}, member-closer {e['member_closer_share']:.3f}, "
            f"nearest AUC {e['nearest_test_auc']['value']:.3f}" for e in entries))
        return summary


def _build_rung(ladder: _Ladder, generator, folder: Path, steps: int) -> dict:
    """Train on to `steps`, sample, write the rung's benchmark, meter it; returns its ladder entry."""
    spec, member, rungs = ladder.spec, ladder.member, ladder.rungs
    log(f"ladder: rung {rungs.index(steps) + 1}/{len(rungs)}: training to {steps} steps")
    generator.fit(ladder.images[member], max_steps=steps, steps_per_epoch=ladder.per_epoch, keep_state=True)
    if generator.steps_trained != steps:
        raise SynthleakError(f"{folder.parent}: its training state is at step {generator.steps_trained}, past rung "
                             f"{steps} whose folder is missing; delete {folder.parent} to rebuild the ladder")
    t0 = time.perf_counter()
    small = generator.sample_small(ladder.n_generated)
    sample_seconds = time.perf_counter() - t0
    source = {"generator": spec.generator, "generator_steps": steps, "generator_image_size": generator.side,
              "generator_epochs": None, **generator.describe(),
              "rung": {"index": rungs.index(steps), "rungs": rungs, "steps_per_epoch": ladder.per_epoch}}
    build_benchmark(ladder.images, ladder.groups, folder, spec, device=ladder.device, quiet=True, force=True,
                    label_groups=ladder.label_groups, synthetic=resize_stack(small, SAMPLE_SIDE), source=source)
    t1 = time.perf_counter()
    meter = memorisation_meter(ladder.images[member], ladder.groups[member], ladder.images[~member], small,
                               generator.side, seed=spec.seed, nonmember_groups=ladder.groups[~member])
    meter.update(rung_audit(folder, generator.side, seed=spec.seed, n_boot=ladder.n_boot))
    entry = {"steps": steps, "folder": folder.name, **meter,
             "parameters": generator.parameters, "train_seconds": round(generator.seconds, 1),
             "steps_per_s": round(generator.steps_per_s, 3), "sample_seconds": round(sample_seconds, 1),
             "meter_seconds": round(time.perf_counter() - t1, 1)}
    summary = json.loads((folder / "SOURCE.json").read_text())
    summary.update(meter=meter, ladder_entry=entry, ladder_key=ladder.key)
    _write_json(folder / "SOURCE.json", summary)  # written last: its ladder_key marks the rung finished
    return entry


def _log_ladder_progress(entries: list[dict], rungs: list[int], elapsed: float) -> None:
    e = entries[-1]
    line = (f"ladder: rung {len(entries)}/{len(rungs)} ({e['steps']} steps): memorised {e['memorised_share']:.3f}, "
            f"member-closer {e['member_closer_share']:.3f}, nearest test AUC {e['nearest_test_auc']['value']:.3f}")
    rest = rungs[len(entries):]
    if rest and e.get("steps_per_s"):
        # training still to do at the last measured speed, plus sampling and metering each remaining rung
        per_rung = e.get("sample_seconds", 0) + e.get("meter_seconds", 0)
        eta = (rest[-1] - e["steps"]) / e["steps_per_s"] + per_rung * len(rest)
        line += f" | {e['steps_per_s']:.2f} steps/s, {elapsed / 60:.0f} min so far, ETA {eta / 60:.0f} min"
    log(line)


def _publish(partial: Path, out: Path, rungs: list[int], summary: dict, force: bool) -> None:
    """Move the finished rungs and ladder.json into `out` in one rename; then drop the work folder."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for steps in rungs:
            os.replace(partial / f"rung-{steps}", staging / f"rung-{steps}")
        (staging / "ladder.json").write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            refuse_existing(out, force)  # again: it may have appeared during the build
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    except BaseException:
        for steps in rungs:  # put finished rungs back, so a re-run does not rebuild them
            if (staging / f"rung-{steps}").exists() and not (partial / f"rung-{steps}").exists():
                os.replace(staging / f"rung-{steps}", partial / f"rung-{steps}")
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    shutil.rmtree(partial)
