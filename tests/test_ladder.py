"""The leak ladder: diffusion and DCGAN generators in steps, rungs, the memorisation meter, resume, bad input."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from synthleak.bench.build import BenchSpec, draw_split, make_generator
from synthleak.bench.folder import build_from_folder
from synthleak.bench.ladder import build_ladder, ladder_epoch_length, parse_rungs
from synthleak.bench.meter import member_closer_share, memorisation_meter
from synthleak.bench.phantoms import make_phantoms
from synthleak.cli import main
from synthleak.errors import DataError, OutputExistsError, SynthleakError
from synthleak.models.diffusion import DIFFUSION_PRESETS

#: the cpu preset's code path at toy size: 16 px, a two-level UNet, 3 DDIM steps
TOY_CPU = replace(DIFFUSION_PRESETS["cpu"], image_size=16, channels=(8, 16), attention_levels=(False, True),
                  norm_num_groups=8, num_head_channels=16, batch_size=8, sample_steps=3, sample_batch=5,
                  steps_per_epoch=2)
#: the gpu preset's code path (two res blocks, fused attention at two levels, its lr and EMA) at toy size
TOY_GPU = replace(DIFFUSION_PRESETS["gpu"], image_size=16, channels=(8, 8, 16), attention_levels=(False, True, True),
                  norm_num_groups=8, num_head_channels=8, batch_size=8, sample_steps=3, sample_batch=4,
                  steps_per_epoch=2)


@pytest.fixture(scope="module")
def phantoms():
    return make_phantoms(8, 3, seed=4)


def _spec(generator="ddpm", **kw) -> BenchSpec:
    return BenchSpec(member_fraction=0.5, labelled_fraction=0.5, n_generated_train=6, n_generated_test=3,
                     generator=generator, seed=3, **kw)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_timings(ladder: dict) -> dict:
    timing = ("train_seconds", "steps_per_s", "sample_seconds", "meter_seconds")
    return {**ladder, "ladder": [{k: v for k, v in e.items() if k not in timing} for e in ladder["ladder"]]}


def _same_benchmarks(a: Path, b: Path) -> None:
    """Every image, label and group file equal; SOURCE.json / ladder.json equal but for timings."""
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        if name.endswith("SOURCE.json"):
            sa, sb = json.loads(fa[name]), json.loads(fb[name])
            for s in (sa, sb):
                s.pop("ladder_entry", None)
            assert sa == sb, name
        elif name == "ladder.json":
            assert _without_timings(json.loads(fa[name])) == _without_timings(json.loads(fb[name]))
        else:
            assert fa[name] == fb[name], name


# ------------------------------------------------------------------ the meter on hand-made cases

def test_meter_counts_an_exact_copy_and_not_a_far_image():
    rng = np.random.default_rng(0)
    members = rng.uniform(0.2, 0.8, (6, 16)).astype(np.float32)
    nonmembers = rng.uniform(0.2, 0.8, (6, 16)).astype(np.float32)
    copy = members[2:3]
    far = np.full((1, 16), 5.0, np.float32)
    from synthleak.leakage import memorised_share

    assert memorised_share(members, copy) == 1.0 and memorised_share(members, far) == 0.0
    assert member_closer_share(members, nonmembers, copy) == 1.0
    assert member_closer_share(members, nonmembers, nonmembers[:3]) == 0.0  # copies of non-members
    # an image exactly between one member and one non-member is a tie: one half
    one, other = np.array([[0.0, 0.0]], np.float32), np.array([[2.0, 0.0]], np.float32)
    assert member_closer_share(one, other, np.array([[1.0, 0.0]], np.float32)) == 0.5


def test_meter_on_images_treats_slices_of_one_patient_as_one():
    """A copy of a slice whose patient has a near-identical neighbouring slice is still memorised
    when groups are given (the second nearest must come from another patient)."""
    rng = np.random.default_rng(1)
    base = rng.integers(0, 200, (4, 16, 16)).astype(np.uint8)
    twin = base[0] + 1  # patient 0's neighbouring slice
    members = np.concatenate([base, twin[None]])
    groups = np.array(["p0", "p1", "p2", "p3", "p0"])
    nonmembers = rng.integers(0, 200, (5, 16, 16)).astype(np.uint8)
    near_copy = base[0] + 2  # a copy of patient 0, nearer its twin slice than any other patient
    synthetic = np.stack([near_copy, np.full((16, 16), 128, np.uint8)])
    meter = memorisation_meter(members, groups, nonmembers, synthetic, side=16)
    assert meter["memorised_share"] == 0.5  # the copy counts, the flat grey image does not
    assert meter["member_closer_share"] == 0.5
    ungrouped = memorisation_meter(members, np.arange(5), nonmembers, synthetic, side=16)
    assert ungrouped["memorised_share"] == 0.0  # without groups the twin slice hides the copy


def test_member_closer_share_equalises_the_reference_sizes():
    """A generator that learnt only the population: 0.5 on average, although non-members outnumber
    members ten to one (without equal sizes the share would be about 5 / 55)."""
    rng = np.random.default_rng(2)
    shares = []
    for seed in range(30):
        members = rng.normal(size=(5, 8)).astype(np.float32)
        nonmembers = rng.normal(size=(50, 8)).astype(np.float32)
        population = rng.normal(size=(500, 8)).astype(np.float32)
        shares.append(member_closer_share(members, nonmembers, population, seed=seed))
    assert abs(np.mean(shares) - 0.5) < 0.06


def test_member_closer_share_draws_whole_patients_for_a_fair_race():
    """Two member patients against non-member images from many patients: a generator that learnt only
    the population lands nearer the more varied set unless the reference takes whole patients too."""
    rng = np.random.default_rng(5)
    grouped, by_image = [], []
    for seed in range(60):
        patients = np.repeat(np.arange(42), 10)
        rows = (np.repeat(rng.normal(size=(42, 8)), 10, axis=0) + 0.1 * rng.normal(size=(420, 8))).astype(np.float32)
        fresh = rng.normal(size=(50, 8)).astype(np.float32)  # images of patients the generator never saw
        members, nonmembers = rows[:20], rows[20:]
        grouped.append(member_closer_share(members, nonmembers, fresh, seed=seed, member_groups=patients[:20],
                                           nonmember_groups=patients[20:]))
        by_image.append(member_closer_share(members, nonmembers, fresh, seed=seed))
    assert abs(np.mean(grouped) - 0.5) < 0.06
    assert np.mean(by_image) < 0.3


# ------------------------------------------------------------------ rungs and their checks

def test_parse_rungs_refuses_bad_lists():
    assert parse_rungs("500,1500,4000") == [500, 1500, 4000]
    for bad in ("500,500", "1500,500", "0,10", "-5,10", "a,b", ""):
        with pytest.raises(SynthleakError, match="--rungs"):
            parse_rungs(bad)


def test_epoch_length_divides_every_rung():
    assert ladder_epoch_length([500, 1500, 4000], 50) == 50
    assert ladder_epoch_length([300, 1000], 50) == 50
    assert ladder_epoch_length([30, 75], 50) == 15
    assert ladder_epoch_length([7, 10], 50) == 1


# ------------------------------------------------------------------ generators: determinism

def test_ddpm_generator_is_deterministic_for_a_seed(phantoms):
    images, _ = phantoms
    spec = _spec()
    a = make_generator(spec, diffusion=TOY_CPU).fit(images[:8], max_steps=3)
    b = make_generator(spec, diffusion=TOY_CPU).fit(images[:8], max_steps=3)
    sa, sb = a.sample(5), b.sample(5)
    assert sa.shape == (5, 256, 256) and sa.dtype == np.uint8
    assert (sa == sb).all() and sa.std() > 0
    # sample i depends only on (seed, i): asking for more keeps the first ones
    assert (a.sample_small(7)[:5] == a.sample_small(5)).all()
    other = make_generator(replace(spec, seed=4), diffusion=TOY_CPU).fit(images[:8], max_steps=3)
    assert not (other.sample(5) == sa).all()
    assert a.describe()["preset"] == "cpu" and a.describe()["generator_parameters"] > 0


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_ddpm_other_prediction_targets_train_and_sample(phantoms, prediction):
    images, _ = phantoms
    generator = make_generator(_spec(), diffusion=replace(TOY_CPU, prediction=prediction))
    generator.fit(images[:8], max_steps=2)
    samples = generator.sample_small(3)
    assert samples.shape == (3, 16, 16) and samples.dtype == np.uint8
    assert (generator.sample_small(3) == samples).all()
    assert generator.describe()["generator_config"]["prediction"] == prediction


def test_dcgan_generator_is_deterministic_for_a_seed(phantoms):
    images, _ = phantoms
    spec = _spec("dcgan", image_size=16)
    a = make_generator(spec).fit(images[:8], epochs=2)
    b = make_generator(spec).fit(images[:8], epochs=2)
    assert a.steps_trained == 2 and (a.sample(4) == b.sample(4)).all()
    c = make_generator(spec).fit(images[:8], max_steps=3, steps_per_epoch=3)
    d = make_generator(spec).fit(images[:8], max_steps=3, steps_per_epoch=3)
    assert c.steps_trained == 3 and (c.sample_small(4) == d.sample_small(4)).all()


def test_dcgan_resumes_after_an_interruption(phantoms, tmp_path, monkeypatch):
    images, _ = phantoms
    spec = _spec("dcgan", image_size=16)
    whole = make_generator(spec).fit(images[:8], max_steps=6, steps_per_epoch=2)
    _interrupt_after(monkeypatch, optimizer_updates=7)  # D, G per step: the 4th step's D update
    state = tmp_path / "dcgan.state"
    with pytest.raises(_Interrupted):
        make_generator(spec, state_path=state).fit(images[:8], max_steps=6, steps_per_epoch=2)
    monkeypatch.undo()
    assert state.exists()
    resumed = make_generator(spec, state_path=state).fit(images[:8], max_steps=6, steps_per_epoch=2)
    assert not state.exists()  # cleared at the end without keep_state
    assert (resumed.sample_small(4) == whole.sample_small(4)).all()


class _Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, optimizer_updates: int) -> None:
    """Make the engine raise on the given optimiser update, as a killed build would stop."""
    from synthleak.models.engine import TrainingEngine

    original = TrainingEngine.optimize
    count = {"n": 0}

    def optimize(self, loss, optimizer=None):
        count["n"] += 1
        if count["n"] == optimizer_updates:
            raise _Interrupted
        return original(self, loss, optimizer)

    monkeypatch.setattr(TrainingEngine, "optimize", optimize)


# ------------------------------------------------------------------ the ladder

def test_ladder_is_deterministic_and_shares_one_split(phantoms, tmp_path):
    images, groups = phantoms
    spec = _spec()
    a = build_ladder(images, groups, tmp_path / "a", spec, "2,4", quiet=True, diffusion=TOY_CPU, n_boot=20)
    build_ladder(images, groups, tmp_path / "b", spec, [2, 4], quiet=True, diffusion=TOY_CPU, n_boot=20)
    _same_benchmarks(tmp_path / "a", tmp_path / "b")
    assert [e["steps"] for e in a["ladder"]] == [2, 4] and a["preset"] == "cpu"
    assert not (tmp_path / "a.partial").exists()
    first, last = tmp_path / "a" / "rung-2", tmp_path / "a" / "rung-4"
    # one member split: identical labels and real images in every rung, different synthetic images
    assert (first / "test_labels.csv").read_text() == (last / "test_labels.csv").read_text()
    assert _files(first / "train" / "real_used") == _files(last / "train" / "real_used")
    assert _files(first / "train" / "generated") != _files(last / "train" / "generated")
    source = json.loads((last / "SOURCE.json").read_text())
    assert source["generator"] == "ddpm" and source["generator_steps"] == 4 and source["preset"] == "cpu"
    meter = source["meter"]
    for key in ("memorised_share", "member_closer_share"):
        assert 0 <= meter[key] <= 1
    auc = meter["nearest_test_auc"]
    assert auc["low"] <= auc["value"] <= auc["high"] and "control_test_auc" in meter
    assert json.loads((tmp_path / "a" / "ladder.json").read_text())["ladder"][1]["steps"] == 4
    # the same seed gives the same member split to every generator family
    member, labelled, _ = draw_split(groups, spec)
    assert source["members"] == int(member.sum())
    plain = build_from_folder_like(images, groups, tmp_path / "plain", replace(spec, generator="noisy-copies"))
    assert (plain / "test_labels.csv").read_text() == (first / "test_labels.csv").read_text()


def build_from_folder_like(images, groups, out: Path, spec: BenchSpec) -> Path:
    from synthleak.bench.build import build_benchmark

    build_benchmark(images, groups, out, spec, quiet=True)
    return out


def test_ladder_resumes_after_an_interruption(phantoms, tmp_path, monkeypatch):
    images, groups = phantoms
    spec = _spec()
    build_ladder(images, groups, tmp_path / "whole", spec, "2,6", quiet=True, diffusion=TOY_CPU, n_boot=20)
    _interrupt_after(monkeypatch, optimizer_updates=4)  # rung 2 is built, training to 6 has begun
    with pytest.raises(_Interrupted):
        build_ladder(images, groups, tmp_path / "cut", spec, "2,6", quiet=True, diffusion=TOY_CPU, n_boot=20)
    monkeypatch.undo()
    partial = tmp_path / "cut.partial"
    assert (partial / "rung-2" / "SOURCE.json").exists() and (partial / "train.state").exists()
    assert not (tmp_path / "cut").exists()
    build_ladder(images, groups, tmp_path / "cut", spec, "2,6", quiet=True, diffusion=TOY_CPU, n_boot=20)
    assert not partial.exists()
    _same_benchmarks(tmp_path / "whole", tmp_path / "cut")


def test_gpu_preset_code_path_runs_on_cpu_at_toy_size(phantoms, tmp_path):
    images, groups = phantoms
    summary = build_ladder(images, groups, tmp_path / "g", _spec(preset="gpu"), "2", quiet=True, diffusion=TOY_GPU,
                           n_boot=20)
    assert summary["preset"] == "gpu" and summary["image_size"] == 16
    source = json.loads((tmp_path / "g" / "rung-2" / "SOURCE.json").read_text())
    assert source["preset"] == "gpu" and source["generator_config"]["num_res_blocks"] == 2
    assert source["generator_config"]["flash_attention"] is True
    assert len(list((tmp_path / "g" / "rung-2" / "test" / "generated").iterdir())) == 3


def test_dcgan_ladder_through_the_cli(real_folder, tmp_path, monkeypatch, capsys):
    """`build-bench --generator dcgan --rungs`: rung folders, ladder.json, one summary line per rung."""
    import synthleak.bench.ladder as ladder_module

    audit = ladder_module.rung_audit  # the CLI's 1,000 bootstrap resamples take a minute: 20 here
    monkeypatch.setattr(ladder_module, "rung_audit", lambda folder, side, seed, n_boot: audit(folder, side, seed, 20))
    out = tmp_path / "ladder"
    rc = main(["build-bench", str(real_folder), "--out", str(out), "--groups", str(tmp_path / "groups.csv"),
               "--generator", "dcgan", "--image-size", "16", "--rungs", "2,4", "--members", "9",
               "--n-generated", "6", "--labelled-fraction", "0.5", "--quiet"])
    printed = capsys.readouterr().out.splitlines()
    assert rc == 0 and [line.split(":")[0] for line in printed] == ["rung-2", "rung-4"]
    ladder = json.loads((out / "ladder.json").read_text())
    assert ladder["generator"] == "dcgan" and ladder["members"] == 9 and ladder["steps_per_epoch"] == 2
    source = json.loads((out / "rung-4" / "SOURCE.json").read_text())
    assert source["generator_steps"] == 4 and source["generator_image_size"] == 16
    assert sorted(p.name for p in out.iterdir()) == ["ladder.json", "rung-2", "rung-4"]


def test_ladder_refuses_existing_output_and_steps_free_generators(phantoms, tmp_path):
    images, groups = phantoms
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        build_ladder(images, groups, tmp_path / "out", _spec(), "2", quiet=True, diffusion=TOY_CPU, n_boot=20)
    with pytest.raises(SynthleakError, match="not trained in steps"):
        build_ladder(images, groups, tmp_path / "x", _spec("rae-gmm"), "2", quiet=True)
    (tmp_path / "y.partial").mkdir()
    (tmp_path / "y.partial" / "mine.txt").write_text("x")
    with pytest.raises(DataError, match="not a synthleak partial build"):
        build_ladder(images, groups, tmp_path / "y", _spec(), "2", quiet=True, diffusion=TOY_CPU, n_boot=20)


# ------------------------------------------------------------------ --members and bad input on the CLI

@pytest.fixture()
def real_folder(tmp_path, phantoms):
    import cv2

    images, groups = phantoms
    folder = tmp_path / "real"
    folder.mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / f"s{i}.png"), im)
    (tmp_path / "groups.csv").write_text("".join(f"s{i},p{g}\n" for i, g in enumerate(groups)))
    return folder


def test_members_is_an_image_count_of_whole_groups(real_folder, tmp_path):
    summary = build_from_folder(real_folder, tmp_path / "b", groups=tmp_path / "groups.csv", n_generated=6,
                                generator="noisy-copies", members=9, labelled_fraction=0.5, quiet=True)
    assert summary["members"] == 9 and summary["members_requested"] == 9  # 3 patients of 3 slices


@pytest.mark.parametrize("extra, message", [
    (["--members", "24"], "--members 24"),  # every image a member: no non-members left
    (["--members", "3"], "single patient group"),  # one patient cannot be labelled and test members
    (["--generator", "ddpm", "--rungs", "10,5"], "strictly increasing"),
    (["--generator", "ddpm", "--rungs", "0,5"], "positive"),
    (["--generator", "ddpm", "--preset", "huge"], "--preset 'huge': unknown"),
    (["--generator", "rae-gmm", "--preset", "gpu"], "only for --generator ddpm"),
    (["--generator", "rae-gmm", "--rungs", "5"], "not trained in steps"),
    (["--generator", "ddpm", "--image-size", "30"], "--image-size 30"),
])
def test_build_bench_refuses_bad_input(real_folder, tmp_path, capsys, extra, message):
    out = tmp_path / "b"
    rc = main(["build-bench", str(real_folder), "--out", str(out), "--groups", str(tmp_path / "groups.csv"),
               "--n-generated", "6", "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "b.partial").exists()


def test_build_bench_refuses_unknown_generator_and_existing_output(real_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: one usage line and the error, exit 2
        main(["build-bench", str(real_folder), "--out", str(tmp_path / "b"), "--generator", "vae"])
    assert exc.value.code == 2 and "invalid choice: 'vae'" in capsys.readouterr().err
    with pytest.raises(SynthleakError, match="--generator 'vae': unknown"):
        build_from_folder(real_folder, tmp_path / "b", generator="vae")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("keep")
    rc = main(["build-bench", str(real_folder), "--out", str(tmp_path / "b"), "--generator", "ddpm",
               "--rungs", "2", "--quiet"])
    assert rc == 2 and "use --force" in capsys.readouterr().err
    assert (tmp_path / "b" / "x").read_text() == "keep"
