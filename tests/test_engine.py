"""The shared training engine: exact resume (two trainer kinds), EMA, step / time budgets, progress."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synthleak.errors import SynthleakError
from synthleak.models.checkpoint import load_checkpoint
from synthleak.models.engine import IndexBatches, TrainingEngine

DATA = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class Interrupt(Exception):
    pass


def _ae() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 64),
                         nn.Unflatten(1, (1, 8, 8)))


def _ae_engine(tmp_path, seed=0, crash_at=None, **kw) -> TrainingEngine:
    torch.manual_seed(seed)
    model = _ae()

    def step(idx, engine):
        if crash_at is not None and (engine.epoch, engine.global_step) == crash_at:
            raise Interrupt
        x = DATA[idx].to(engine.device)
        with engine.autocast():
            loss = F.l1_loss(engine.modules["ae"](x).float(), x)
        engine.optimize(loss)
        return {"l1": loss}

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    args = dict(modules={"ae": model}, optimizers={"ae": opt}, batches=IndexBatches(10, 4, min_batch=2),
                epochs=3, seed=seed, state_path=tmp_path / "ae.partial", fingerprint="ae")
    args.update(kw)
    return TrainingEngine(step, **args)


def _gan_engine(tmp_path, crash_at=None, **kw) -> TrainingEngine:
    torch.manual_seed(1)
    gen = nn.Sequential(nn.Linear(4, 64), nn.Tanh())
    disc = nn.Sequential(nn.Linear(64, 8), nn.LeakyReLU(), nn.Linear(8, 1))
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=4e-3, betas=(0.5, 0.999))
    flat = DATA.flatten(1)

    def step(batch, engine):
        if crash_at is not None and (engine.epoch, engine.global_step) == crash_at:
            raise Interrupt
        idx_real, idx_other = batch
        real = flat[idx_real] + 0.01 * flat[idx_other]
        z = torch.randn(len(real), 4, generator=engine.generator)
        fake = engine.modules["G"](z)
        loss_d = F.relu(1 - engine.modules["D"](real)).mean() + F.relu(1 + engine.modules["D"](fake.detach())).mean()
        engine.optimize(loss_d, "D")
        loss_g = -engine.modules["D"](fake).mean()
        engine.optimize(loss_g, "G")
        return {"D": loss_d, "G": loss_g}

    def batches(generator):
        order = torch.randperm(10, generator=generator)
        for i in range(0, 10 - 3 + 1, 3):
            # drawn lazily, between steps: interleaves with the step's own draws from the generator
            yield order[i:i + 3], torch.randint(0, 10, (3,), generator=generator)

    args = dict(modules={"G": gen, "D": disc}, optimizers={"G": opt_g, "D": opt_d},
                schedulers={"G": torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, 4),
                            "D": torch.optim.lr_scheduler.CosineAnnealingLR(opt_d, 4)},
                ema={"G": 0.9}, batches=batches, epochs=4, seed=5, state_path=tmp_path / "gan.partial")
    args.update(kw)
    return TrainingEngine(step, **args)


def _equal_states(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _ae_one_stream(tmp_path, **kw) -> TrainingEngine:
    """One generator stream for the whole run: resuming relies on the saved RNG states alone."""
    return _ae_engine(tmp_path, epoch_seed=None, **kw)


@pytest.mark.parametrize("make, crash_at, name", [(_ae_engine, (1, 4), "ae"), (_gan_engine, (2, 7), "G"),
                                                  (_ae_one_stream, (2, 7), "ae")])
def test_interrupted_run_resumes_to_identical_weights(tmp_path, make, crash_at, name):
    full = make(tmp_path / "full")
    full_result = full.run()
    torch.manual_seed(123)  # whatever ran in between: the resumed run must not depend on it
    with pytest.raises(Interrupt):
        make(tmp_path / "cut", crash_at=crash_at).run()
    saved = torch.load(next((tmp_path / "cut").glob("*.partial")), weights_only=True)
    assert saved["epoch"] == crash_at[0]  # the state of the last finished epoch
    torch.manual_seed(456)
    resumed = make(tmp_path / "cut")
    result = resumed.run()
    assert result.resumed_from_epoch == crash_at[0] and result.epochs_done == full_result.epochs_done
    assert result.global_step == full_result.global_step
    assert _equal_states(full.modules[name], resumed.modules[name])
    for key in full.optimizers:
        assert _equal_states(full.modules[key], resumed.modules[key])
    if full.ema:
        assert _equal_states(full.ema["G"], resumed.ema["G"])
    assert [h[k] for h in result.history for k in h if k not in ("seconds", "items_per_s")] == \
           [h[k] for h in full_result.history for k in h if k not in ("seconds", "items_per_s")]


def test_seed_gives_identical_runs_and_another_seed_does_not(tmp_path):
    a, b, c = _ae_engine(tmp_path / "a"), _ae_engine(tmp_path / "b"), _ae_engine(tmp_path / "c", seed=1)
    for e in (a, b, c):
        e.run()
    assert _equal_states(a.modules["ae"], b.modules["ae"])
    assert not _equal_states(a.modules["ae"], c.modules["ae"])


def test_ema_follows_the_update_rule(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(6, 3, generator=torch.Generator().manual_seed(2))
    live_after_each_step = []

    def step(idx, engine):
        loss = engine.modules["m"](x[idx]).pow(2).mean()
        engine.optimize(loss)
        live_after_each_step.append({k: v.clone() for k, v in engine.modules["m"].state_dict().items()})
        return {"loss": loss}

    engine = TrainingEngine(step, modules={"m": model}, optimizers={"m": torch.optim.SGD(model.parameters(), lr=0.5)},
                            batches=IndexBatches(6, 2), epochs=2, ema={"m": 0.8},
                            last_path=tmp_path / "m.safetensors")
    engine.run()
    expected = start
    for live in live_after_each_step:
        expected = {k: 0.8 * expected[k] + 0.2 * live[k] for k in expected}
    for k, v in engine.ema["m"].state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    assert not torch.allclose(engine.ema["m"].weight, model.weight)
    saved, _ = load_checkpoint(tmp_path / "m.safetensors")  # checkpoints hold the EMA weights
    assert torch.equal(saved["weight"], engine.ema["m"].weight)


def test_step_budget_stops_mid_epoch_and_time_budget_at_an_epoch_end(tmp_path):
    result = _ae_engine(tmp_path / "s", epochs=None, max_steps=5).run()  # 3 batches per epoch
    assert result.global_step == 5 and result.epochs_done == 2 and result.stop_reason == "max_steps"
    result = _ae_engine(tmp_path / "t", time_budget_s=0.0).run()
    assert result.epochs_done == 1 and result.stop_reason == "time_budget"
    # the budget is not part of the run's identity: a later call continues it
    again = _ae_engine(tmp_path / "t").run()
    assert again.resumed_from_epoch == 1 and again.epochs_done == 3


def test_progress_lines_report_throughput_and_eta(tmp_path, capsys):
    _ae_engine(tmp_path, label="toy").run()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("[toy] epoch")]
    assert len(lines) == 3 and "img/s" in lines[0] and "ETA" in lines[0] and "l1 " in lines[0]
    assert "ETA" not in lines[-1]


def test_validation_best_checkpoint_and_state_cleanup(tmp_path):
    scores = iter([0.2, 0.7, 0.5])
    engine = _ae_engine(tmp_path, validate=lambda e: {"valid_score": next(scores)},
                        best_score=lambda m: m["valid_score"], best_path=tmp_path / "best.safetensors",
                        last_path=tmp_path / "last.safetensors", meta=lambda r: {"epochs": r.epochs_done})
    result = engine.run()
    assert result.best_epoch == 2 and result.best_metrics["valid_score"] == 0.7
    best, meta = load_checkpoint(tmp_path / "best.safetensors")
    last, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert meta == {"epochs": 3, "best_epoch": 2}
    assert set(best) == {"1.weight", "1.bias", "4.weight", "4.bias"}
    assert all(torch.equal(best[k], result.best_state["ae"][k]) for k in best)
    assert not torch.equal(best["1.weight"], last["1.weight"])
    assert not (tmp_path / "ae.partial").exists()


def test_foreign_or_damaged_state_is_ignored(tmp_path, capsys):
    _ae_engine(tmp_path, epochs=1).run()
    assert (tmp_path / "ae.partial").exists()  # no final checkpoint asked for: the state is kept
    other = _ae_engine(tmp_path, fingerprint="other").run()
    assert other.resumed_from_epoch == 0 and "belongs to a different run" in capsys.readouterr().err
    (tmp_path / "ae.partial").write_bytes(b"not a torch file")
    assert _ae_engine(tmp_path).run().resumed_from_epoch == 0
    fresh = _ae_engine(tmp_path / "fresh")
    fresh.run()


def test_index_batches():
    gen = torch.Generator().manual_seed(0)
    assert [len(b) for b in IndexBatches(9, 4, min_batch=2)(gen)] == [4, 4]
    assert [len(b) for b in IndexBatches(10, 4, min_batch=2)(gen)] == [4, 4, 2]
    assert [len(b) for b in IndexBatches(10, 4, drop_last=True)(gen)] == [4, 4]
    assert [b.tolist() for b in IndexBatches(5, 2, shuffle=False)(gen)] == [[0, 1], [2, 3], [4]]
    assert all((np.diff(b) > 0).all() for b in IndexBatches(20, 5, sort=True)(gen))
    source = IndexBatches(5, 2, steps=7, drop_last=True)
    assert len(source) == 7 and len(list(source(gen))) == 7
    assert len(IndexBatches(10, 4, min_batch=2)) == 3 and len(IndexBatches(9, 4, min_batch=2)) == 2


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(SynthleakError, match="epochs or max_steps"):
        _ae_engine(tmp_path, epochs=None)
    with pytest.raises(SynthleakError, match="ema names unknown"):
        _ae_engine(tmp_path, ema={"nope": 0.9})
    gan = _gan_engine(tmp_path)
    with pytest.raises(SynthleakError, match="optimiser name"):
        gan.optimize(torch.zeros((), requires_grad=True))
    with pytest.raises(SynthleakError, match="no batches"):
        _ae_engine(tmp_path / "e", epochs=None, max_steps=3, batches=IndexBatches(0, 4)).run()
