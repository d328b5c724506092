"""`synthleak pretrain`: supervised encoder pre-training on a class-folder dataset (any architecture).

Architecture contract
---------------------
`run_pretrain` knows nothing about particular networks. `cfg.arch` is looked up in
`synthleak.features.ENCODER_ARCHS` ("module:function"); that function is called as
`build_pretrain_encoder(cfg: PretrainConfig) -> EncoderSpec` (features/base.py) and must return:

- `encoder`: an `nn.Module` mapping float tensors [B, 1, S, S] in [0, 1] (S = `input_size`) to
  [B, out_dim] features, with an integer attribute `out_dim`; any normalisation happens inside it;
- `input_size`: S (images are resized once, before training, to S x S);
- `meta`: JSON-serialisable settings needed to rebuild the same encoder (stored as `encoder_meta`);
- optimiser defaults `lr`, `weight_decay`, StepLR `step_size` / `gamma`, and `augment`
  ('light': random affine + intensity jitter; 'strong': also Gaussian blur and random erasing).

A linear head (`out_dim` -> classes) is put on top and trained with cross-entropy and Adam
(`cfg.lr` overrides the architecture's learning rate). The checkpoint written to `cfg.out` holds
the best-validation weights as safetensors, keys `encoder.<...>` and `head.<...>`, and the metadata
{"arch", "encoder_meta", "classes", "best_valid_accuracy", "test_accuracy", "epochs",
"input_size", ...}. Autoencoders initialise their encoder with `load_pretrained_encoder(path, arch)`.

Data layout
-----------
`DIR/train/<class>/*` (+ optional `DIR/valid/<class>/*`, `DIR/test/<class>/*`; a missing valid or
test split is carved out of train, stratified and seeded), or `DIR/<class>/*` split 70/15/15 per
class with `cfg.seed` (`--set valid_fraction=F`, `--set test_fraction=F`). Images are read as 8-bit
gray 256x256 (converted / resized like every other input). `--max-images N` caps the training split
(seeded, stratified); valid and test are kept whole so their accuracies stay comparable.

Training is resumable: after every epoch the model, optimiser, scheduler, best weights and history
are saved to `<out>.partial` (tensors and plain values only, read back with weights_only=True); an
interrupted run with the same data and settings continues from the next epoch.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..cache import make_key
from ..config import PretrainConfig
from ..data.images import list_images, load_image
from ..errors import CheckpointError, DataError, OutputExistsError, SynthleakError
from ..fsutil import save_training_state
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..runtime import log, seed_everything, torch_generator

SPLITS = ("train", "valid", "test")
#: bump when the training procedure changes, so stale .partial files are not resumed
PRETRAIN_VERSION = 1


# ----------------------------------------------------------------------------- data


@dataclass
class ClassFolderData:
    """A class-folder dataset loaded as uint8 [n, 256, 256] per split, labels index into `classes`."""

    classes: list[str]
    pixels: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    layout: str

    def counts(self) -> dict[str, int]:
        return {s: int(len(self.labels[s])) for s in SPLITS}

    def content_key(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for split in SPLITS:
            h.update(split.encode())
            h.update(self.labels[split].astype(np.int64).tobytes())
            for img in self.pixels[split]:
                h.update(hashlib.sha1(img.tobytes()).digest())
        return h.hexdigest()[:24]


def _class_dirs(folder: Path) -> list[Path]:
    """Sub-folders of `folder` (hidden ones ignored), sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _list_split(folder: Path) -> dict[str, list[Path]]:
    """class name -> image files of one split folder `folder/<class>/*`."""
    classes = _class_dirs(folder)
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (expected {folder}/<class>/*.png)")
    return {c.name: list_images(c) for c in classes}


def find_class_files(root: Path) -> tuple[dict[str, dict[str, list[Path]] | None], str]:
    """Files per split and class; a split is None when it has to be carved out of train."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if (root / "train").is_dir():
        found = {s: (_list_split(root / s) if (root / s).is_dir() else None) for s in SPLITS}
        train_classes = set(found["train"])
        for split in ("valid", "test"):
            extra = set(found[split] or {}) - train_classes
            if extra:
                raise DataError(f"{root / split}: classes {sorted(extra)} are not in {root / 'train'}")
        return found, "splits"
    subdirs = _class_dirs(root)
    if not subdirs:
        raise DataError(
            f"{root}: no class folders found (expected {root}/train/<class>/*.png or {root}/<class>/*.png)")
    if any(p.name in ("valid", "test") for p in subdirs):
        raise DataError(f"{root}: has valid/ or test/ but no train/ folder")
    return {"train": _list_split(root), "valid": None, "test": None}, "classes"


def _carve(labels: np.ndarray, fraction: float, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask taking round(fraction * base[c]) images of every class c (base = class sizes before
    any split was carved, so valid and test fractions refer to the same total); one image stays behind."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = min(int(round(fraction * base[c])), len(idx) - 1)
        if n > 0:
            mask[rng.permutation(idx)[:n]] = True
    return mask


def _take_stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded subset of n rows with class proportions kept (sorted)."""
    if n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    try:
        idx, _ = train_test_split(np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify: plain random subset
        idx = np.random.default_rng(seed).permutation(len(labels))[:n]
    return np.sort(idx)


def _load_files(files: list[Path], workers: int = 4) -> np.ndarray:
    out = np.empty((len(files), 256, 256), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (arr, _, _) in enumerate(pool.map(load_image, files)):
            out[i] = arr
    return out


def load_class_folders(root: Path, seed: int = 0, max_images: int | None = None,
                       valid_fraction: float = 0.15, test_fraction: float = 0.15) -> ClassFolderData:
    """Load a class-folder dataset (see the module docstring for the accepted layouts)."""
    found, layout = find_class_files(Path(root))
    classes = sorted(found["train"])
    if len(classes) < 2:
        raise DataError(f"{root}: need at least 2 class folders to train a classifier, found {classes}")
    files: dict[str, list[Path]] = {}
    labels: dict[str, np.ndarray] = {}
    for split in SPLITS:
        per_class = found[split] or {}
        files[split] = [f for c in classes for f in per_class.get(c, [])]
        labels[split] = np.array([i for i, c in enumerate(classes) for _ in per_class.get(c, [])], dtype=np.int64)
    rng = np.random.default_rng(seed)
    base = np.bincount(labels["train"], minlength=len(classes))
    for split, fraction in (("test", test_fraction), ("valid", valid_fraction)):
        if found[split] is None:
            mask = _carve(labels["train"], fraction, base, rng)
            files[split] = [f for f, m in zip(files["train"], mask) if m]
            labels[split] = labels["train"][mask]
            files["train"] = [f for f, m in zip(files["train"], mask) if not m]
            labels["train"] = labels["train"][~mask]
    if len(labels["valid"]) == 0:
        raise DataError(f"{root}: no validation images (add {root}/valid/<class>/ or more training images)")
    if max_images:
        keep = _take_stratified(labels["train"], max_images, seed)
        files["train"] = [files["train"][i] for i in keep]
        labels["train"] = labels["train"][keep]
    pixels = {s: _load_files(files[s]) for s in SPLITS}
    return ClassFolderData(classes=classes, pixels=pixels, labels=labels, layout=layout)


# ----------------------------------------------------------------------------- tensors


def resize_u8(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, H, W] -> uint8 [n, size, size] (area averaging when shrinking)."""
    if pixels.shape[1:] == (size, size):
        return pixels
    interp = cv2.INTER_AREA if size < pixels.shape[1] else cv2.INTER_LINEAR
    out = np.empty((len(pixels), size, size), dtype=np.uint8)
    for i, img in enumerate(pixels):
        out[i] = cv2.resize(img, (size, size), interpolation=interp)
    return out


def to_tensor(pixels: np.ndarray, device: str):
    """uint8 [B, S, S] -> float [B, 1, S, S] in [0, 1] on device (NCHW)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels)).to(device).unsqueeze(1).float().div_(255.0)


def batches(n: int, batch_size: int, generator=None, drop_single: bool = False) -> list[np.ndarray]:
    """Index batches (shuffled with the torch generator when given). A trailing batch of one image
    is dropped when training, because BatchNorm cannot normalise a single sample."""
    import torch

    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    out = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if drop_single and len(out) > 1 and len(out[-1]) == 1:
        out = out[:-1]
    return out


def autocast(device: str):
    """bfloat16 mixed precision on CUDA, a no-op elsewhere."""
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- augmentation


def _uniform(n: int, lo: float, hi: float, gen):
    import torch

    return torch.rand(n, generator=gen) * (hi - lo) + lo


def augment(x, strength: str, gen):
    """Random affine (rotation +-10 deg, scale 0.9-1.1, shift +-6%) and intensity jitter; 'strong' adds
    Gaussian blur and random erasing. x: float [B, 1, S, S] in [0, 1]; random draws come from the CPU
    generator `gen` so that a seed gives the same augmentations on every device."""
    import torch
    import torch.nn.functional as F

    if strength not in ("light", "strong", "none"):
        raise SynthleakError(f"unknown augmentation {strength!r} (light, strong or none)")
    if strength == "none":
        return x
    b = x.shape[0]
    angle = _uniform(b, -10, 10, gen) * math.pi / 180
    scale = _uniform(b, 0.9, 1.1, gen)
    shift = _uniform(2 * b, -0.12, 0.12, gen).view(b, 2)  # grid units span 2, so 0.12 = 6% of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = _uniform(b, 0.85, 1.15, gen).to(x.device).view(b, 1, 1, 1)
    brightness = _uniform(b, -0.08, 0.08, gen).to(x.device).view(b, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp_(0, 1)
    if strength == "strong":
        x = _random_blur(x, gen)
        x = _random_erase(x, gen)
    return x


def _random_blur(x, gen, p: float = 0.5):
    """Per-image Gaussian blur (sigma 0.1-1.5 px, probability p) as one grouped convolution."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    sigma = _uniform(b, 0.1, 1.5, gen)
    apply = torch.rand(b, generator=gen) < p
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k1 = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).unsqueeze(1).to(x.device, x.dtype)  # [B, 1, k, k]
    blurred = F.conv2d(F.pad(x.transpose(0, 1), (radius,) * 4, mode="reflect"), k2, groups=b).transpose(0, 1)
    mask = apply.to(x.device).view(b, 1, 1, 1)
    return torch.where(mask, blurred, x)


def _random_erase(x, gen, p: float = 0.5):
    """Per-image random erasing: a rectangle of 2-20% of the area (aspect 0.3-3.3) set to a random gray."""
    import torch

    b, _, h, w = x.shape
    area = _uniform(b, 0.02, 0.2, gen) * h * w
    aspect = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), gen))
    eh = torch.sqrt(area * aspect).clamp(1, h).floor()
    ew = torch.sqrt(area / aspect).clamp(1, w).floor()
    top = (torch.rand(b, generator=gen) * (h - eh + 1)).floor()
    left = (torch.rand(b, generator=gen) * (w - ew + 1)).floor()
    fill = torch.rand(b, generator=gen)
    apply = torch.rand(b, generator=gen) < p
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    box = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
           & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)) & apply.view(b, 1, 1))
    box = box.unsqueeze(1).to(x.device)
    return torch.where(box, fill.to(x.device, x.dtype).view(b, 1, 1, 1), x)


# ----------------------------------------------------------------------------- training


def _classifier(encoder, n_classes: int):
    import torch.nn as nn

    class EncoderClassifier(nn.Module):
        """Encoder + linear head; state_dict keys are `encoder.*` and `head.*`."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(int(encoder.out_dim), n_classes)

        def forward(self, x):
            return self.head(self.encoder(x))

    return EncoderClassifier()


def _evaluate(model, pixels: np.ndarray, labels: np.ndarray, batch_size: int, device: str) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) without augmentation; (nan, nan) for an empty split."""
    import torch
    import torch.nn.functional as F

    if len(labels) == 0:
        return float("nan"), float("nan")
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for idx in batches(len(labels), batch_size):
            x = to_tensor(pixels[idx], device)
            y = torch.from_numpy(labels[idx]).to(device)
            with autocast(device):
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(labels), correct / len(labels)


def _train_epoch(model, opt, pixels: np.ndarray, labels: np.ndarray, batch_size: int, device: str,
                 augment_mode: str, gen) -> tuple[float, float, int]:
    """One pass over the training split: (mean loss, accuracy, images seen)."""
    import torch
    import torch.nn.functional as F

    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for idx in batches(len(labels), batch_size, gen, drop_single=True):
        x = augment(to_tensor(pixels[idx], device), augment_mode, gen)
        y = torch.from_numpy(labels[idx]).to(device)
        with autocast(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
    return loss_sum / max(seen, 1), correct / max(seen, 1), seen


def epoch_generator(seed: int, epoch: int):
    """Per-epoch random streams, so that a resumed run replays exactly what an uninterrupted one does:
    a CPU generator for shuffles and augmentation, and the global torch seed (dropout) reset too."""
    import torch

    torch.manual_seed(seed * 100_003 + epoch + 1)
    return torch_generator(seed * 100_003 + epoch)


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


save_partial = save_training_state


def load_partial(path: Path, fingerprint: str, quiet: bool = False) -> dict | None:
    """The saved training state when it belongs to this run (same fingerprint), else None."""
    import torch

    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged partial file is discarded, never trusted
        log(f"ignoring unreadable {path} ({str(exc).splitlines()[0][:120]})", quiet)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log(f"ignoring {path}: it belongs to a different run (data or settings changed)", quiet)
        return None
    return state


def _cpu_state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists (use --force to overwrite)")
    if out.exists() and out.is_dir():
        raise OutputExistsError(f"{out}: is a folder, expected a checkpoint file path")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise DataError(f"{parent}: output folder does not exist")


def _fingerprint(cfg: PretrainConfig, spec, data: ClassFolderData, lr: float) -> str:
    """Identity of a training run for resuming; epochs are left out so a run can be extended."""
    return make_key(PRETRAIN_VERSION, cfg.arch, spec.meta, spec.input_size, cfg.batch_size, lr,
                    spec.weight_decay, spec.step_size, spec.gamma, spec.augment, cfg.seed,
                    data.classes, data.content_key())


def run_pretrain(cfg: PretrainConfig) -> dict:
    """Train encoder + linear head on a class-folder dataset; write the best-validation checkpoint.

    Returns a flat summary (printed by the CLI); the per-epoch history is in the checkpoint's meta.
    """
    import torch

    from . import ENCODER_ARCHS, load_object

    if cfg.arch not in ENCODER_ARCHS:
        raise SynthleakError(f"--arch {cfg.arch}: unknown architecture (choose from {', '.join(ENCODER_ARCHS)})")
    if cfg.epochs < 1:
        raise SynthleakError(f"--epochs {cfg.epochs}: must be at least 1")
    if cfg.batch_size < 1:
        raise SynthleakError(f"--batch-size {cfg.batch_size}: must be at least 1")
    out = Path(cfg.out)
    _check_output(out, cfg.force)
    seed_everything(cfg.seed)
    data = load_class_folders(Path(cfg.data), cfg.seed, cfg.max_images,
                              _fraction(cfg, "valid_fraction"), _fraction(cfg, "test_fraction"))
    counts = data.counts()
    log(f"[pretrain {cfg.arch}] {cfg.data}: classes {data.classes}; images {counts}", cfg.quiet)

    spec = load_object(ENCODER_ARCHS[cfg.arch])(cfg)
    lr = float(cfg.lr if cfg.lr is not None else spec.lr)
    size = int(spec.input_size)
    pixels = {s: resize_u8(data.pixels[s], size) for s in SPLITS}
    model = _classifier(spec.encoder, len(data.classes)).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(spec.step_size)), gamma=spec.gamma)

    fingerprint = _fingerprint(cfg, spec, data, lr)
    partial = partial_path(out)
    state = load_partial(partial, fingerprint, cfg.quiet)
    history: list[dict] = []
    best: dict = {"accuracy": -1.0, "loss": float("inf"), "epoch": 0, "state": None}
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = list(state["history"])
        best = {"accuracy": state["best_accuracy"], "loss": state["best_loss"], "epoch": state["best_epoch"],
                "state": state["best_state"]}
        start_epoch = int(state["epoch"])
        log(f"[pretrain {cfg.arch}] resuming from {partial} after epoch {start_epoch}", cfg.quiet)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        gen = epoch_generator(cfg.seed, epoch)
        train_loss, train_acc, seen = _train_epoch(model, opt, pixels["train"], data.labels["train"],
                                                   cfg.batch_size, cfg.device, spec.augment, gen)
        train_time = time.perf_counter() - t0
        valid_loss, valid_acc = _evaluate(model, pixels["valid"], data.labels["valid"], cfg.batch_size, cfg.device)
        sched.step()
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
                        "valid_loss": valid_loss, "valid_accuracy": valid_acc, "seconds": seconds})
        # Best = highest validation accuracy, ties broken by lower validation loss.
        if valid_acc > best["accuracy"] or (valid_acc == best["accuracy"] and valid_loss < best["loss"]):
            best = {"accuracy": valid_acc, "loss": valid_loss, "epoch": epoch + 1, "state": _cpu_state(model)}
        log(f"[pretrain {cfg.arch}] epoch {epoch + 1}/{cfg.epochs} train loss {train_loss:.4f} acc {train_acc:.3f}"
            f" | valid loss {valid_loss:.4f} acc {valid_acc:.3f} | {seen / max(train_time, 1e-9):.1f} img/s,"
            f" {seconds:.1f}s", cfg.quiet)
        save_partial(partial, {
            "fingerprint": fingerprint, "epoch": epoch + 1, "model": _cpu_state(model),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
            "best_accuracy": best["accuracy"], "best_loss": best["loss"], "best_epoch": best["epoch"],
            "best_state": best["state"],
        })

    model.load_state_dict(best["state"])
    test_loss, test_acc = _evaluate(model, pixels["test"], data.labels["test"], cfg.batch_size, cfg.device)
    test_acc_out = None if math.isnan(test_acc) else test_acc
    log(f"[pretrain {cfg.arch}] best epoch {best['epoch']} (valid accuracy {best['accuracy']:.3f});"
        f" test accuracy {'n/a' if test_acc_out is None else f'{test_acc:.3f}'} on {counts['test']} images",
        cfg.quiet)
    meta = {
        "arch": cfg.arch, "encoder_meta": spec.meta, "classes": data.classes,
        "best_valid_accuracy": best["accuracy"], "best_epoch": best["epoch"], "test_accuracy": test_acc_out,
        "test_loss": None if math.isnan(test_loss) else test_loss, "epochs": cfg.epochs, "input_size": size,
        "lr": lr, "batch_size": cfg.batch_size, "seed": cfg.seed, "augment": spec.augment,
        "data": str(cfg.data), "layout": data.layout, "image_counts": counts, "history": history,
    }
    _check_output(out, cfg.force)  # the file may have appeared while we trained
    save_checkpoint(out, best["state"], meta)
    partial.unlink(missing_ok=True)
    seconds = [h["seconds"] for h in history[start_epoch:]] or [h["seconds"] for h in history]
    return {
        "out": str(out), "arch": cfg.arch, "classes": data.classes, "image_counts": counts,
        "best_epoch": best["epoch"], "best_valid_accuracy": best["accuracy"], "test_accuracy": test_acc_out,
        "epochs": cfg.epochs, "input_size": size, "seconds_per_epoch": float(np.mean(seconds)),
        "resumed_from_epoch": start_epoch,
        "final_train_loss": history[-1]["train_loss"], "first_train_loss": history[0]["train_loss"],
    }


def _fraction(cfg: PretrainConfig, key: str) -> float:
    raw = cfg.options.get(key, "0.15")
    try:
        value = float(raw)
    except ValueError:
        raise SynthleakError(f"--set {key}={raw!r}: expected a number between 0 and 0.5") from None
    if not 0 <= value <= 0.5:
        raise SynthleakError(f"--set {key}={raw!r}: expected a number between 0 and 0.5")
    return value


# ----------------------------------------------------------------------------- loading for autoencoders


def load_pretrained_encoder(path: str | Path, expected_arch: str) -> tuple[dict, dict]:
    """(encoder state_dict without the `encoder.` prefix, checkpoint meta) of a `synthleak pretrain` file.

    Raises CheckpointError (one line naming the file) when the file is unreadable, was not written
    by `synthleak pretrain`, or was pre-trained for another architecture. `meta["encoder_meta"]` holds
    what the architecture needs to rebuild a matching encoder.
    """
    state, meta = load_checkpoint(path)
    arch = meta.get("arch")
    if arch is None:
        raise CheckpointError(f"{path}: not a `synthleak pretrain` checkpoint (no architecture in its metadata)")
    if arch != expected_arch:
        raise CheckpointError(f"{path}: encoder was pre-trained for --arch {arch}, expected {expected_arch}")
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not encoder:
        raise CheckpointError(f"{path}: checkpoint has no encoder.* weights")
    return encoder, meta
