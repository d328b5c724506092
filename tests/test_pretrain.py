"""`synthleak pretrain` (features/pretrain.py) on a tiny phantom class-folder set, with the conv-res arch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthleak.config import PretrainConfig
from synthleak.errors import CheckpointError, DataError, OutputExistsError, SynthleakError
from synthleak.features import pretrain
from synthleak.features.pretrain import augment, load_class_folders, load_pretrained_encoder, run_pretrain
from synthleak.models.checkpoint import load_checkpoint


def _phantom(kind: int, rng: np.random.Generator) -> np.ndarray:
    """Class 0: bright disc, class 1: bright square, class 2: horizontal bars; random position and noise."""
    yy, xx = np.mgrid[:256, :256]
    cy, cx = rng.integers(90, 166, 2)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 50 ** 2
    elif kind == 1:
        mask = (abs(yy - cy) < 45) & (abs(xx - cx) < 45)
    else:
        mask = ((yy // 24) % 2 == 0) & (abs(xx - cx) < 70)
    img = 40 + 170 * mask + rng.normal(0, 12, (256, 256))
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_classes(root: Path, n_per_class: int, classes=("disc", "square", "bars"), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(_phantom(k, rng)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def class_root(tmp_path_factory) -> Path:
    return _write_classes(tmp_path_factory.mktemp("classes") / "flat", 10)


def _cfg(data: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(data=data, arch="conv-res", out=out, epochs=4, batch_size=8, image_size=16, lr=3e-3,
                seed=0, quiet=True)
    base.update(kw)
    return PretrainConfig(**base)


def test_flat_layout_is_split_per_class_and_seeded(class_root):
    a = load_class_folders(class_root, seed=3)
    b = load_class_folders(class_root, seed=3)
    assert a.classes == ["bars", "disc", "square"] and a.layout == "classes"
    assert a.counts() == {"train": 18, "valid": 6, "test": 6}  # 15% of 10 per class rounds to 2
    for split in ("train", "valid", "test"):
        assert len(set(a.labels[split])) == 3 and len(set(np.bincount(a.labels[split]))) == 1
    assert a.content_key() == b.content_key()
    assert load_class_folders(class_root, seed=4).content_key() != a.content_key()


def test_split_layout_and_max_images(tmp_path):
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        _write_classes(tmp_path / "ds" / split, n, classes=("a", "b"), seed=len(split))
    data = load_class_folders(tmp_path / "ds", seed=0, max_images=4)
    assert data.layout == "splits" and data.classes == ["a", "b"]
    assert data.counts() == {"train": 4, "valid": 4, "test": 4}
    assert sorted(np.bincount(data.labels["train"])) == [2, 2]  # stratified cap


@pytest.mark.parametrize("make, message", [
    (lambda r: r.mkdir(), "no class folders"),
    (lambda r: _write_classes(r, 3, classes=("only",)), "at least 2 class folders"),
    (lambda r: (_write_classes(r, 3, classes=("a", "b")), (r / "a" / "notes.txt").write_text("x")), "not an image"),
    (lambda r: (r / "a").mkdir(parents=True) or _write_classes(r, 2, classes=("b",)), "no images"),
    (lambda r: _write_classes(r / "valid", 2, classes=("a", "b")), "no train/"),
])
def test_bad_layouts_raise_one_line_errors(tmp_path, make, message):
    root = tmp_path / "bad"
    make(root)
    with pytest.raises(DataError, match=message) as info:
        load_class_folders(root)
    assert "\n" not in str(info.value)


def test_missing_folder_and_unknown_arch(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_class_folders(tmp_path / "nope")
    with pytest.raises(SynthleakError, match="unknown architecture"):
        run_pretrain(_cfg(tmp_path, tmp_path / "x.safetensors", arch="nope"))
    # conv-res reads only dropout of the autoencoder's settings: the audit's training keys are refused here
    with pytest.raises(SynthleakError, match=r"--set epochs='5': not an option of pretrain --arch conv-res"):
        run_pretrain(_cfg(tmp_path, tmp_path / "x.safetensors", arch="conv-res", options={"epochs": "5"}))


def test_augment_is_seeded_and_keeps_range():
    import torch

    x = torch.rand(4, 1, 32, 32)
    a = augment(x, "strong", torch.Generator().manual_seed(1))
    b = augment(x, "strong", torch.Generator().manual_seed(1))
    c = augment(x, "light", torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.allclose(c, x)


def test_pretrain_reduces_loss_and_writes_checkpoint(class_root, tmp_path):
    out = tmp_path / "enc.safetensors"
    res = run_pretrain(_cfg(class_root, out, epochs=6))
    state, meta = load_checkpoint(out)
    losses = [h["train_loss"] for h in meta["history"]]
    assert len(losses) == 6
    assert min(losses[-2:]) < losses[0]
    assert 0 <= res["test_accuracy"] <= 1 and res["best_valid_accuracy"] > 1 / 3
    assert res["final_train_loss"] == losses[-1]
    assert {k.split(".")[0] for k in state} == {"encoder", "head"}
    assert state["head.weight"].shape == (3, 256)
    for key in ("arch", "encoder_meta", "classes", "best_valid_accuracy", "test_accuracy", "epochs", "input_size"):
        assert key in meta
    assert meta["arch"] == "conv-res" and meta["classes"] == ["bars", "disc", "square"] and meta["input_size"] == 16
    assert not pretrain.partial_path(out).exists()

    enc, meta2 = load_pretrained_encoder(out, "conv-res")
    assert enc and not any(k.startswith("encoder.") for k in enc) and meta2["arch"] == "conv-res"
    with pytest.raises(CheckpointError, match="pre-trained for --arch conv-res, expected vit"):
        load_pretrained_encoder(out, "vit")

    with pytest.raises(OutputExistsError, match="--force"):
        run_pretrain(_cfg(class_root, out, epochs=1))
    run_pretrain(_cfg(class_root, out, epochs=1, force=True))
    assert load_checkpoint(out)[1]["epochs"] == 1


def test_interrupted_pretrain_resumes(class_root, tmp_path, monkeypatch):
    out = tmp_path / "enc.safetensors"
    real_evaluate = pretrain._evaluate
    calls = {"n": 0}

    def flaky(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's validation: simulate a crash
            raise KeyboardInterrupt
        return real_evaluate(*args, **kw)

    monkeypatch.setattr(pretrain, "_evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(_cfg(class_root, out, epochs=2))
    assert pretrain.partial_path(out).exists() and not out.exists()
    monkeypatch.setattr(pretrain, "_evaluate", real_evaluate)
    res = run_pretrain(_cfg(class_root, out, epochs=2))
    assert res["resumed_from_epoch"] == 1 and len(load_checkpoint(out)[1]["history"]) == 2
    # the resumed run equals an uninterrupted one (per-epoch seeded shuffles and augmentation)
    ref = run_pretrain(_cfg(class_root, tmp_path / "ref.safetensors", epochs=2))
    assert res["final_train_loss"] == pytest.approx(ref["final_train_loss"], rel=1e-5)


def test_not_a_pretrain_checkpoint(tmp_path):
    import torch

    from synthleak.models.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "other.safetensors", {"w": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="not a `synthleak pretrain` checkpoint"):
        load_pretrained_encoder(path, "conv-res")
