"""One training loop for every trainer in synthleak: the caller writes a step, the engine does the rest.

A trainer supplies its networks, optimisers and a *step function* `step(batch, engine) -> metrics`;
`TrainingEngine.run()` owns everything around it: epochs or a step budget, a wall-clock budget,
seeding (global RNGs and the per-epoch data generator), device placement and autocast, the backward
pass and optimiser update (`engine.optimize(loss)`), an optional EMA copy of any module, progress
lines (images/s, ETA), a resumable partial state after every epoch, and best / last checkpoints as
safetensors. No `.backward()` or optimiser `.step()` is written anywhere else in the package.

Randomness and resuming
-----------------------
- A fresh run starts with `seed_everything(seed)` (build your networks after seeding them yourself:
  initialisation happens before the engine exists).
- `engine.generator` is a CPU `torch.Generator` for every draw a step makes on purpose (shuffles,
  augmentation, noise, timesteps). With the default `epoch_seed`, at the start of epoch e it is
  seeded with `seed * 100_003 + e` and the global torch RNG (dropout) with that value + 1, so an
  epoch's draws depend only on (seed, epoch). With `epoch_seed=None` it is seeded once and runs on.
- After every epoch the models, optimisers, schedulers, EMA copies, grad scaler, every RNG state,
  the counters, the history and the best weights are written atomically to `state_path` (tensors
  and plain values only: it is read back with `torch.load(weights_only=True)`). A run restarted
  with the same `fingerprint` continues at the next epoch and ends with the same weights as an
  uninterrupted one; a state file with another fingerprint, or one that does not load, is ignored
  (and the run starts over). An epoch is the unit of resumption: a step-budgeted trainer should
  make its epochs short (`IndexBatches(..., steps=K)`).

Step kinds (sketches; `x = images[idx]` stands for the caller's own tensor conversion)
----------
Autoencoder::

    def step(idx, engine):
        x = to_tensor(pixels[idx], engine.device)
        with engine.autocast():
            loss = F.l1_loss(engine.modules["ae"](x).float(), x)
        engine.optimize(loss)
        return {"l1": loss}

    TrainingEngine(step, modules={"ae": ae}, optimizers={"ae": Adam(ae.parameters())},
                   batches=IndexBatches(len(pixels), 32, min_batch=2), epochs=50, seed=seed,
                   device=device, state_path=cache / "ae.partial", fingerprint=key,
                   last_path=cache / "ae.safetensors", meta=lambda r: {"epochs": r.epochs_done}).run()

Supervised (validation picks the best epoch; `result.best_state` / `best_path` hold its weights)::

    def step(idx, engine):
        x = augment(to_tensor(pixels[idx], engine.device), "light", engine.generator)
        y = labels[idx].to(engine.device)
        with engine.autocast():
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y)
        engine.optimize(loss)
        return {"train_loss": loss, "train_accuracy": (logits.argmax(1) == y).float().mean()}

    TrainingEngine(step, modules={"net": net}, optimizers={"net": opt},
                   schedulers={"net": StepLR(opt, 10)}, batches=IndexBatches(n, 64),
                   validate=lambda engine: {"valid_accuracy": accuracy(net, valid)},
                   best_score=lambda m: m["valid_accuracy"], epochs=30, ...)

GAN with two optimisers (and per-epoch schedulers)::

    def step(batch, engine):
        real = to_gan_space(images[batch], engine.device)
        z = torch.randn(len(real), 128, generator=engine.generator).to(engine.device)
        with engine.autocast():
            fake = G(z)
            loss_d = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake.detach())).mean()
        engine.optimize(loss_d, "D")
        with engine.autocast():
            loss_g = -D(fake).mean()
        engine.optimize(loss_g, "G")
        return {"D": loss_d, "G": loss_g}

    TrainingEngine(step, modules={"G": G, "D": D}, optimizers={"G": opt_g, "D": opt_d},
                   schedulers={"G": CosineAnnealingLR(opt_g, E), "D": CosineAnnealingLR(opt_d, E)},
                   ema={"G": 0.999}, batches=IndexBatches(n, 64, drop_last=True), epochs=E, ...)

Diffusion (MONAI `DiffusionModelUNet` + `DDPMScheduler`; a step budget in short epochs)::

    def step(idx, engine):
        x = images[idx].to(engine.device)
        noise = torch.randn(x.shape, generator=engine.generator).to(engine.device)
        t = torch.randint(0, 1000, (len(x),), generator=engine.generator).to(engine.device)
        with engine.autocast():
            loss = F.mse_loss(inferer(inputs=x, diffusion_model=unet, noise=noise, timesteps=t).float(), noise)
        engine.optimize(loss)
        return {"mse": loss}

    TrainingEngine(step, modules={"unet": unet}, optimizers={"unet": opt}, ema={"unet": 0.9999},
                   batches=IndexBatches(n, 32, steps=500), max_steps=50_000, time_budget_s=3600, ...)

Contrastive (two augmented views, NT-Xent)::

    def step(idx, engine):
        x = to_tensor(pixels[idx], engine.device)
        views = torch.cat([augment(x, "strong", engine.generator), augment(x, "strong", engine.generator)])
        with engine.autocast():
            z = F.normalize(encoder(views).float(), dim=1)
        loss = nt_xent(z, temperature=0.1)
        engine.optimize(loss)
        return {"nt_xent": loss}
"""
from __future__ import annotations

import copy
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import SynthleakError
from ..fsutil import save_training_state
from ..runtime import log, seed_everything
from .checkpoint import save_checkpoint

#: bump when the layout of the partial state changes (older partial files are then ignored)
STATE_FORMAT = 1
#: default per-epoch seed stride: epoch e of a run seeded s draws from seed s * EPOCH_STRIDE + e
EPOCH_STRIDE = 100_003
#: epochs whose mean time is the pace of the progress line (its s/epoch and its ETA)
PACE_EPOCHS = 5

StepFn = Callable[[Any, "TrainingEngine"], Mapping[str, "float | torch.Tensor"]]
BatchSource = Callable[[torch.Generator], Iterable[Any]]


def default_epoch_seed(seed: int) -> Callable[[int], int]:
    """Epoch e draws from seed * 100_003 + e (the convention of every trainer written so far)."""
    return lambda epoch: seed * EPOCH_STRIDE + epoch


class IndexBatches:
    """A batch source: index arrays over n items, shuffled with the engine's generator each epoch.

    shuffle: draw a fresh permutation (torch.randperm on the generator) each epoch; else 0..n-1.
    sort: sort the indices inside each batch (contiguous reads; does not change what is learnt).
    drop_last: drop a trailing batch smaller than batch_size.
    min_batch: drop a trailing batch smaller than this (2 for BatchNorm, which cannot train on one
        image; a single image then gives no batch at all).
    steps: yield exactly this many batches per epoch, cycling through fresh permutations (for
        step-budgeted trainers whose data set is smaller or larger than one epoch of steps).
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, sort: bool = False,
                 drop_last: bool = False, min_batch: int = 1, steps: int | None = None):
        if n < 0 or batch_size < 1 or min_batch < 1 or (steps is not None and steps < 1):
            raise SynthleakError(f"IndexBatches: bad sizes (n={n}, batch_size={batch_size}, "
                                 f"min_batch={min_batch}, steps={steps})")
        self.n, self.batch_size, self.shuffle, self.sort = n, batch_size, shuffle, sort
        self.drop_last, self.min_batch, self.steps = drop_last, min_batch, steps

    def _one_pass(self, generator: torch.Generator) -> list[np.ndarray]:
        order = torch.randperm(self.n, generator=generator).numpy() if self.shuffle else np.arange(self.n)
        out = [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if out and (self.drop_last and len(out[-1]) < self.batch_size or len(out[-1]) < self.min_batch):
            out = out[:-1]
        return [np.sort(b) for b in out] if self.sort else out

    def __call__(self, generator: torch.Generator) -> Iterator[np.ndarray]:
        if self.steps is None:
            yield from self._one_pass(generator)
            return
        done = 0
        while done < self.steps:
            batches = self._one_pass(generator)
            if not batches:
                return
            for b in batches[: self.steps - done]:
                yield b
            done += min(len(batches), self.steps - done)

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps if self._per_pass() else 0
        return self._per_pass()

    def _per_pass(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        keep_rest = rest and not self.drop_last and rest >= self.min_batch
        return full + int(bool(keep_rest))


@dataclass
class TrainResult:
    """What `run()` did. history has one dict per finished epoch (across resumes):
    {"epoch": 1-based, <mean of each step metric, weighted by batch items>, <validation metrics>,
    "seconds": epoch wall time incl. validation, "items_per_s": training throughput}."""

    epochs_done: int
    global_step: int
    history: list[dict]
    last_metrics: dict[str, float]
    seconds: float  # training wall time of this call (not of earlier, interrupted calls)
    items_per_s: float
    resumed_from_epoch: int
    stop_reason: str  # "epochs", "max_steps" or "time_budget"
    best_epoch: int | None = None
    best_metrics: dict | None = None
    best_state: dict[str, dict] | None = field(default=None, repr=False)

    @property
    def seconds_per_epoch(self) -> float | None:
        run = self.epochs_done - self.resumed_from_epoch
        return self.seconds / run if run > 0 else None


class TrainingEngine:
    """Runs `step(batch, engine)` over `batches(engine.generator)` for each epoch (see module docstring).

    modules: name -> network; moved to `device`, put in train mode each epoch and eval mode at the end.
    optimizers / schedulers: name -> object; schedulers step once per epoch (or per step with
        scheduler_interval="step").
    batches: callable(generator) -> iterable of batches, called once per epoch; consumed lazily, so a
        step's own draws from `engine.generator` interleave with the source's as they are made.
        `IndexBatches` covers the usual case; items per batch (for images/s) = len(batch), or
        len(batch[0]) for a tuple / list batch.
    epochs / max_steps / time_budget_s: stop after that many epochs, optimiser steps (checked after
        every step), or wall-clock seconds (checked at epoch ends). At least one of epochs, max_steps.
    seed, epoch_seed: see the module docstring (epoch_seed=None: one generator stream for the run).
    device, amp: autocast (bfloat16, or float16 with a grad scaler where bf16 is unsupported) only
        when amp is on and the device is CUDA; plain float32 elsewhere.
    ema: module name -> decay; `engine.ema[name]` is an eval-mode copy updated after every step
        (p_ema = decay * p_ema + (1 - decay) * p; buffers copied). Checkpoints hold the EMA weights.
    state_path, fingerprint: the resumable partial state (see module docstring).
    validate: callable(engine) -> metrics, run after each epoch's training (modules in train mode
        again next epoch); its metrics join the epoch record.
    best_score: callable(epoch record) -> comparable; the epoch with the highest score (first one
        on ties) is the best; its weights are kept (in the state file too) and in best_path.
    last_path / best_path / meta: safetensors checkpoints written at the end, with meta (a dict, or
        callable(result) -> dict) as their metadata. When one was written the state file is deleted;
        otherwise it is kept (a later call with more epochs continues it) until `clear_state()`.
    label, log_every: progress lines (the "synthleak" logger) every `log_every` epochs (and the last one),
        plus a line inside an epoch every `progress_every_s` seconds.
    """

    def __init__(self, step: StepFn, *, modules: Mapping[str, nn.Module],
                 optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                 schedulers: Mapping[str, Any] | None = None, scheduler_interval: str = "epoch",
                 batches: BatchSource, epochs: int | None = None, max_steps: int | None = None,
                 time_budget_s: float | None = None, seed: int = 0,
                 epoch_seed: Callable[[int], int] | None | str = "default", device: str = "cpu",
                 amp: bool = True, ema: Mapping[str, float] | None = None,
                 state_path: str | Path | None = None, fingerprint: str = "",
                 validate: Callable[["TrainingEngine"], Mapping[str, float]] | None = None,
                 best_score: Callable[[dict], Any] | None = None,
                 last_path: str | Path | None = None, best_path: str | Path | None = None,
                 meta: dict | Callable[[TrainResult], dict] | None = None,
                 label: str = "train", log_every: int = 1,
                 progress_every_s: float = 60.0):
        if epochs is None and max_steps is None:
            raise SynthleakError(f"[{label}] training needs epochs or max_steps")
        if scheduler_interval not in ("epoch", "step"):
            raise SynthleakError(f"[{label}] scheduler_interval must be 'epoch' or 'step'")
        if best_path is not None and best_score is None:
            raise SynthleakError(f"[{label}] best_path needs best_score")
        self.step_fn = step
        self.modules = dict(modules)
        self.optimizers = dict(optimizers or {})
        self.schedulers = dict(schedulers or {})
        self.scheduler_interval = scheduler_interval
        self.batches = batches
        self.epochs, self.max_steps, self.time_budget_s = epochs, max_steps, time_budget_s
        self.seed = seed
        self.epoch_seed = default_epoch_seed(seed) if epoch_seed == "default" else epoch_seed
        self.device = device
        self.amp = amp
        self.state_path = Path(state_path) if state_path is not None else None
        self.fingerprint = fingerprint
        self.validate, self.best_score = validate, best_score
        self.last_path = Path(last_path) if last_path is not None else None
        self.best_path = Path(best_path) if best_path is not None else None
        self.meta = meta
        self.label = label
        self.log_every, self.progress_every_s = max(1, log_every), progress_every_s
        for module in self.modules.values():
            module.to(device)
        unknown = set(ema or {}) - set(self.modules)
        if unknown:
            raise SynthleakError(f"[{label}] ema names unknown modules {sorted(unknown)}")
        self.ema_decay = dict(ema or {})
        self.ema = {name: copy.deepcopy(self.modules[name]).eval().requires_grad_(False) for name in self.ema_decay}
        self.generator = torch.Generator(device="cpu")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._cuda_amp() and not _bf16_ok())
        #: 0-based epoch being trained, and optimiser steps finished before the current one
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict] = []
        self._best: dict | None = None  # {"epoch", "score", "metrics", "state"}

    # ------------------------------------------------------------------ helpers for step functions
    def autocast(self):
        """Mixed precision for the forward pass: bf16 (or fp16 + scaler) on CUDA with amp, else a no-op."""
        if self._cuda_amp():
            return torch.autocast("cuda", dtype=torch.bfloat16 if _bf16_ok() else torch.float16)
        return nullcontext()

    def optimize(self, loss: torch.Tensor, optimizer: str | None = None) -> None:
        """zero_grad, backward (through the grad scaler when fp16), optimiser step: one update.

        `optimizer` names one of `optimizers`; it may be left out when there is only one."""
        if optimizer is None:
            if len(self.optimizers) != 1:
                raise SynthleakError(f"[{self.label}] optimize() needs an optimiser name "
                                     f"(one of {sorted(self.optimizers)})")
            opt = next(iter(self.optimizers.values()))
        else:
            opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()

    # ------------------------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        start_epoch = self._resume()
        if start_epoch == 0 and not self.history:
            seed_everything(self.seed)
            if self.epoch_seed is None:
                self.generator.manual_seed(self.seed)
        t_start, items_run, last = time.perf_counter(), 0, {}
        stop = "epochs"
        epoch_times: list[float] = []
        while self._more_epochs():
            self.epoch = len(self.history)
            if self.epoch_seed is not None:
                epoch_seed = int(self.epoch_seed(self.epoch))
                self.generator.manual_seed(epoch_seed)
                torch.manual_seed(epoch_seed + 1)  # dropout etc.: an epoch's draws depend on (seed, epoch)
            t0 = time.perf_counter()
            record, last, items = self._train_epoch()
            train_s = time.perf_counter() - t0
            if items == 0 and self.epochs is None:
                raise SynthleakError(f"[{self.label}] the batch source gave no batches: max_steps cannot be reached")
            items_run += items
            if self.validate is not None:
                record.update({k: _plain(v) for k, v in self.validate(self).items()})
            if self.scheduler_interval == "epoch":
                for sched in self.schedulers.values():
                    sched.step()
            seconds = time.perf_counter() - t0
            record.update(seconds=seconds, items_per_s=items / max(train_s, 1e-9))
            self.history.append(record)
            self._track_best(record)
            self._save_state()
            epoch_times.append(seconds)
            if self._steps_exhausted():
                stop = "max_steps"
            elif self.time_budget_s is not None and time.perf_counter() - t_start > self.time_budget_s \
                    and self._more_epochs():
                stop = "time_budget"
            self._log_epoch(record, epoch_times, stop)
            if stop != "epochs":
                break
        for module in self.modules.values():
            module.eval()
        seconds = time.perf_counter() - t_start
        result = TrainResult(
            epochs_done=len(self.history), global_step=self.global_step, history=list(self.history),
            last_metrics=last, seconds=seconds, items_per_s=items_run / max(seconds, 1e-9),
            resumed_from_epoch=start_epoch, stop_reason=stop,
            best_epoch=self._best["epoch"] if self._best else None,
            best_metrics=self._best["metrics"] if self._best else None,
            best_state=self._best["state"] if self._best else None)
        if stop == "time_budget":
            log(f"[{self.label}] time budget of {self.time_budget_s:g}s reached after {result.epochs_done} epochs")
        self._write_checkpoints(result)
        return result

    def _more_epochs(self) -> bool:
        return (self.epochs is None or len(self.history) < self.epochs) and not self._steps_exhausted()

    def _steps_exhausted(self) -> bool:
        return self.max_steps is not None and self.global_step >= self.max_steps

    def _train_epoch(self) -> tuple[dict, dict, int]:
        """One pass over this epoch's batches: (record of mean metrics, last step's metrics, items)."""
        for module in self.modules.values():
            module.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        seen, last, last_line = 0, {}, t0
        per_epoch = _length(self.batches)
        for i, batch in enumerate(self.batches(self.generator)):
            values = self.step_fn(batch, self)
            n = _items(batch)
            last = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}
            for k, v in last.items():
                sums[k] = sums.get(k, 0.0) + v * n
            seen += n
            self.global_step += 1
            self._update_ema()
            if self.scheduler_interval == "step":
                for sched in self.schedulers.values():
                    sched.step()
            now = time.perf_counter()
            if now - last_line > self.progress_every_s:
                last_line = now
                of = f"/{per_epoch}" if per_epoch else ""
                log(f"[{self.label}] epoch {self.epoch + 1} step {i + 1}{of} "
                    f"{_format_metrics({k: s / seen for k, s in sums.items()})} | {seen / (now - t0):.1f} img/s")
            if self._steps_exhausted():
                break
        record = {"epoch": self.epoch + 1, **{k: s / max(seen, 1) for k, s in sums.items()}}
        return record, last, seen

    def _update_ema(self) -> None:
        with torch.no_grad():
            for name, decay in self.ema_decay.items():
                live, avg = self.modules[name], self.ema[name]
                for p_avg, p in zip(avg.parameters(), live.parameters()):
                    p_avg.lerp_(p.detach(), 1.0 - decay)
                for b_avg, b in zip(avg.buffers(), live.buffers()):
                    b_avg.copy_(b)

    def _track_best(self, record: dict) -> None:
        if self.best_score is None:
            return
        score = _plain(self.best_score(record))
        if self._best is None or score > self._best["score"]:
            self._best = {"epoch": record["epoch"], "score": score, "metrics": dict(record),
                          "state": self.weights()}

    def _log_epoch(self, record: dict, epoch_times: list[float], stop: str) -> None:
        done = len(self.history)
        total = self.epochs
        if self.max_steps is not None and self.global_step:
            by_steps = math.ceil(self.max_steps * done / self.global_step)
            total = by_steps if total is None else min(total, by_steps)
        if not (done % self.log_every == 0 or stop != "epochs" or (total is not None and done >= total)):
            return
        metrics = {k: v for k, v in record.items() if k not in ("epoch", "seconds", "items_per_s")}
        # one pace for both numbers: the ETA is the remaining epochs times the s/epoch shown, a mean over the
        # last few epochs (the machine's load changes; the first epochs of a run are often slower)
        recent = epoch_times[-PACE_EPOCHS:]
        pace = float(np.mean(recent))
        over = f" (mean of the last {len(recent)})" if len(recent) > 1 else ""
        eta = ""
        if total is not None and done < total and stop == "epochs":
            eta = f", ETA {_format_seconds((total - done) * pace)}"
        of = f"/{total}" if total is not None else ""
        log(f"[{self.label}] epoch {done}{of} {_format_metrics(metrics)} | {record['items_per_s']:.1f} img/s, "
            f"{pace:.1f}s/epoch{over}{eta}")

    # ------------------------------------------------------------------------ weights and state
    def weights(self) -> dict[str, dict]:
        """CPU copies of every module's weights (the EMA copy where one is kept), by module name."""
        return {name: {k: v.detach().cpu().clone() for k, v in self.ema.get(name, module).state_dict().items()}
                for name, module in self.modules.items()}

    def _flat(self, weights: dict[str, dict]) -> dict:
        """One module: its own keys; several: `<module name>.<key>`."""
        if len(weights) == 1:
            return next(iter(weights.values()))
        return {f"{name}.{k}": v for name, state in weights.items() for k, v in state.items()}

    def _write_checkpoints(self, result: TrainResult) -> None:
        if self.last_path is None and self.best_path is None:
            return
        meta = self.meta(result) if callable(self.meta) else dict(self.meta or {})
        if self.last_path is not None:
            save_checkpoint(self.last_path, self._flat(self.weights()), meta)
        if self.best_path is not None and result.best_state is not None:
            save_checkpoint(self.best_path, self._flat(result.best_state), {**meta, "best_epoch": result.best_epoch})
        self.clear_state()

    def clear_state(self) -> None:
        """Delete the partial state file (call once the trained weights are safely written)."""
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where the last finished epoch left off."""
        return {
            "format": STATE_FORMAT, "fingerprint": self.fingerprint, "epoch": len(self.history),
            "global_step": self.global_step, "history": self.history,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "ema": {k: m.state_dict() for k, m in self.ema.items()},
            "scaler": self.scaler.state_dict(), "generator": self.generator.get_state(), "rng": _rng_states(),
            "best": self._best,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state format {state.get('format')!r}, expected {STATE_FORMAT}")
        for group, live in (("modules", self.modules), ("optimizers", self.optimizers),
                            ("schedulers", self.schedulers), ("ema", self.ema)):
            if set(state[group]) != set(live):
                raise ValueError(f"{group} {sorted(state[group])} do not match {sorted(live)}")
            for name, obj in live.items():
                obj.load_state_dict(state[group][name])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        _set_rng_states(state["rng"])
        self.history = list(state["history"])
        self.global_step = int(state["global_step"])
        self._best = state["best"]

    def _save_state(self) -> None:
        if self.state_path is not None:
            save_training_state(self.state_path, self.state_dict())

    def _resume(self) -> int:
        """Load the partial state when it belongs to this run; returns the epochs already done."""
        path = self.state_path
        if path is None or not path.exists():
            return len(self.history)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged partial file is discarded, never trusted
            log(f"[{self.label}] ignoring unreadable {path} ({str(exc).splitlines()[0][:120]})")
            return len(self.history)
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            log(f"[{self.label}] ignoring {path}: it belongs to a different run (data or settings changed)")
            return len(self.history)
        backup = copy.deepcopy(self.state_dict())  # loading is in place: keep a copy to undo a half-load
        try:
            self.load_state_dict(state)
        except Exception as exc:
            self.load_state_dict(backup)
            log(f"[{self.label}] ignoring {path}: it does not fit this model ({str(exc).splitlines()[0][:120]})")
            return len(self.history)
        log(f"[{self.label}] resuming from {path} after epoch {len(self.history)}")
        return len(self.history)

    def _cuda_amp(self) -> bool:
        return self.amp and str(self.device).startswith("cuda")


# ---------------------------------------------------------------------------------------- helpers
def _bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _plain(value):
    """Numbers as Python floats (tuples element-wise), so the state file holds only plain values."""
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _items(batch) -> int:
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()))
    return len(batch)


def _length(batches) -> int | None:
    try:
        return len(batches)
    except TypeError:
        return None


def _rng_states() -> dict:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_version, torch.tensor(py_state, dtype=torch.int64), py_gauss],
    }


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = states["python"]
    random.setstate((version, tuple(int(v) for v in py_state.tolist()), py_gauss))


def _format_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items())


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
