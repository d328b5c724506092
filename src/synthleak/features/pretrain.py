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

A linear head (`out_dim` -> classes; models/classifier.py) is put on top and trained through the
shared engine with cross-entropy and Adam (`cfg.lr` overrides the architecture's learning rate).
The checkpoint written to `cfg.out` holds the best-validation weights as safetensors, keys
`encoder.<...>` and `head.<...>`, and the metadata {"arch", "encoder_meta", "classes",
"best_valid_accuracy", "test_accuracy", "epochs", "input_size", "history", ...}. Autoencoders
initialise their encoder with `load_pretrained_encoder(path, arch)`.

Data layout
-----------
`DIR/train/<class>/*` (+ optional `DIR/valid/<class>/*`, `DIR/test/<class>/*`; a missing valid or
test split is carved out of train, stratified and seeded), or `DIR/<class>/*` split 70/15/15 per
class with `cfg.seed` (`--set valid_fraction=F`, `--set test_fraction=F`). Images are read as 8-bit
gray 256x256 (converted / resized like every other input). `--max-images N` caps the training split
(seeded, stratified); valid and test are kept whole so their accuracies stay comparable.

Training is resumable: the engine's state (model, optimiser, scheduler, RNGs, best weights, history)
is saved to `<out>.partial` after every epoch; a rerun with the same data and settings continues.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import make_key
from ..config import PretrainConfig
from ..data.images import list_images, load_image
from ..errors import DataError, OutputExistsError, SynthleakError
from ..models.augment import augment
from ..models.checkpoint import save_checkpoint
from ..models.classifier import EncoderClassifier, classification_step, load_pretrained_encoder
from ..models.classifier import evaluate as _evaluate  # module-level name: tests interrupt training here
from ..models.engine import IndexBatches, TrainingEngine
from ..models.tensors import resize_u8
from ..options import Options, check_options, option
from ..runtime import log, seed_everything, verbosity

__all__ = ["ClassFolderData", "augment", "load_class_folders", "load_pretrained_encoder", "run_pretrain"]

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


# ----------------------------------------------------------------------------- training
def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


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
    with verbosity(cfg.quiet):
        import torch

        from . import ENCODER_ARCHS, load_object

        if cfg.arch not in ENCODER_ARCHS:
            raise SynthleakError(f"--arch {cfg.arch}: unknown architecture (choose from {', '.join(ENCODER_ARCHS)})")
        if cfg.epochs < 1:
            raise SynthleakError(f"--epochs {cfg.epochs}: must be at least 1")
        arch_options = [load_object("synthleak.features.conv_res_ae:DropoutOption")] if cfg.arch == "conv-res" else []
        check_options(cfg.options, [PretrainOptions, *arch_options], f"pretrain --arch {cfg.arch}")
        if cfg.batch_size < 1:
            raise SynthleakError(f"--batch-size {cfg.batch_size}: must be at least 1")
        out = Path(cfg.out)
        _check_output(out, cfg.force)
        seed_everything(cfg.seed)
        data = load_class_folders(Path(cfg.data), cfg.seed, cfg.max_images,
                                  _fraction(cfg, "valid_fraction"), _fraction(cfg, "test_fraction"))
        counts = data.counts()
        log(f"[pretrain {cfg.arch}] {cfg.data}: classes {data.classes}; images {counts}")

        spec = load_object(ENCODER_ARCHS[cfg.arch])(cfg)
        lr, size = float(cfg.lr if cfg.lr is not None else spec.lr), int(spec.input_size)
        pixels = {s: resize_u8(data.pixels[s], size) for s in SPLITS}
        model = EncoderClassifier(spec.encoder, len(data.classes)).to(cfg.device)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=spec.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(spec.step_size)), gamma=spec.gamma)

        def validate(_engine) -> dict:
            loss, accuracy = _evaluate(model, pixels["valid"], data.labels["valid"], cfg.batch_size, cfg.device)
            return {"valid_loss": loss, "valid_accuracy": accuracy}

        engine = TrainingEngine(
            classification_step(pixels["train"], data.labels["train"], spec.augment), modules={"model": model},
            optimizers={"model": opt}, schedulers={"model": sched},
            batches=IndexBatches(len(data.labels["train"]), cfg.batch_size, min_batch=2), epochs=cfg.epochs,
            # best = highest validation accuracy, ties broken by lower validation loss
            validate=validate, best_score=lambda m: (m["valid_accuracy"], -m["valid_loss"]),
            seed=cfg.seed, device=cfg.device, state_path=partial_path(out),
            fingerprint=_fingerprint(cfg, spec, data, lr), label=f"pretrain {cfg.arch}")
        result = engine.run()
        history, best_state = result.history, result.best_state["model"]

        model.load_state_dict(best_state)
        test_loss, test_acc = _evaluate(model, pixels["test"], data.labels["test"], cfg.batch_size, cfg.device)
        test_acc_out = None if math.isnan(test_acc) else test_acc
        best_acc = result.best_metrics["valid_accuracy"]
        log(f"[pretrain {cfg.arch}] best epoch {result.best_epoch} (valid accuracy {best_acc:.3f});"
            f" test accuracy {'n/a' if test_acc_out is None else f'{test_acc:.3f}'} on {counts['test']} images")
        meta = {
            "arch": cfg.arch, "encoder_meta": spec.meta, "classes": data.classes,
            "best_valid_accuracy": best_acc, "best_epoch": result.best_epoch, "test_accuracy": test_acc_out,
            "test_loss": None if math.isnan(test_loss) else test_loss, "epochs": cfg.epochs, "input_size": size,
            "lr": lr, "batch_size": cfg.batch_size, "seed": cfg.seed, "augment": spec.augment,
            "data": str(cfg.data), "layout": data.layout, "image_counts": counts, "history": history,
        }
        _check_output(out, cfg.force)  # the file may have appeared while we trained
        save_checkpoint(out, best_state, meta)
        engine.clear_state()
        start_epoch = result.resumed_from_epoch
        seconds = [h["seconds"] for h in history[start_epoch:]] or [h["seconds"] for h in history]
        return {
            "out": str(out), "arch": cfg.arch, "classes": data.classes, "image_counts": counts,
            "best_epoch": result.best_epoch, "best_valid_accuracy": best_acc, "test_accuracy": test_acc_out,
            "epochs": cfg.epochs, "input_size": size, "seconds_per_epoch": float(np.mean(seconds)),
            "resumed_from_epoch": start_epoch,
            "final_train_loss": history[-1]["train_loss"], "first_train_loss": history[0]["train_loss"],
        }


@dataclass(frozen=True)
class PretrainOptions(Options):
    valid_fraction: float = option(0.15, "share of each class held out for validation (0-0.5)")
    test_fraction: float = option(0.15, "share of each class held out for the test accuracy (0-0.5)")


def _fraction(cfg: PretrainConfig, key: str) -> float:
    value = getattr(PretrainOptions.read(cfg.options), key)
    if not 0 <= value <= 0.5:
        raise SynthleakError(f"--set {key}={cfg.options[key]!r}: expected a number between 0 and 0.5")
    return value
