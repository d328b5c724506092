"""Safe checkpoint I/O: safetensors with a JSON config, or torch files loaded with weights_only=True."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

from ..errors import CheckpointError
from ..fsutil import atomic_output

META_KEY = "synthleak"


def save_checkpoint(path: str | Path, state_dict: dict, meta: dict) -> Path:
    """Write tensors + metadata atomically as safetensors (metadata stored as JSON under 'synthleak')."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, default=str)})
    return path


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """Load (state_dict, meta). safetensors or a torch file with weights_only=True; never a raw pickle."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors" or (len(head) == 8 and not zipfile.is_zipfile(path) and head[:2] != b"\x80\x02"
                                         and int.from_bytes(head, "little") < 100_000_000):
        return _load_safetensors(path)
    return _load_torch(path)


def _load_safetensors(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta_raw = (f.metadata() or {}).get(META_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several private error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    try:
        meta = json.loads(meta_raw) if meta_raw else {}
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON") from None
    return state, meta


def _load_torch(path: Path) -> tuple[dict, dict]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects, not just weights "
            f"(only safetensors or weights-only torch files are accepted) [{str(exc).splitlines()[0][:120]}]"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:200]})") from None
    meta: dict = {}
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                meta = {k: v for k, v in obj.items() if k != key and isinstance(v, (str, int, float, bool))}
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    return dict(obj), meta


def load_into(module, state: dict, path: str | Path, strict: bool = True) -> None:
    """load_state_dict with a one-line error naming the first mismatched key."""
    try:
        result = module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = " ".join(x.strip() for x in first[:3])[:300]
        raise CheckpointError(f"{path}: weights do not fit the model ({detail})") from None
    return result


def file_digest(path: str | Path | None) -> str | None:
    """Content hash of a weights file (None for no file), so cached models change when the file does."""
    if not path:
        return None
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:24]


def state_digest(module) -> str:
    """Content hash of a module's weights: identifies a trained feature mapping for the feature cache."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]
