"""Run files (`<id>,<0|1>`), score files (`<id>,<score>`), label files, and atomic writes."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..errors import DataError, OutputExistsError
from ..fsutil import atomic_output
from .images import list_entries, natural_key, strip_image_suffix


def check_writable(path: str | Path, force: bool) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
    if path.exists() and path.is_dir():
        raise OutputExistsError(f"{path}: is a folder, expected a file path")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise DataError(f"{parent}: is a file, cannot write {path.name} inside it")
    return path


def atomic_write_bytes(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write via a temporary file in the same folder and rename, so readers never see half a file."""
    path = check_writable(path, force)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str, force: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode(), force)


def format_rows(ids: list[str], values, fmt: str) -> str:
    order = sorted(range(len(ids)), key=lambda i: natural_key(ids[i]))
    buf = io.StringIO()
    for i in order:
        buf.write(f"{ids[i]},{format(values[i], fmt)}\n")
    return buf.getvalue()


def run_text(ids: list[str], predictions) -> str:
    preds = np.asarray(predictions).astype(int)
    if not set(np.unique(preds)) <= {0, 1}:
        raise ValueError("predictions must be 0 or 1")
    return format_rows(ids, preds, "d")


def scores_text(ids: list[str], scores) -> str:
    scores = np.asarray(scores, dtype=float)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    return format_rows(ids, scores, ".8g")


def read_pairs(path: str | Path, what: str, form: str = "<id>,<value>") -> list[tuple[int, str, str]]:
    """Rows `(line, key, value)` of a two-column CSV file (UTF-8, optional BOM, no header); keys non-empty."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a {what}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    rows = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            n = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise DataError(f"{path}:{n}: expected '{form}', got {','.join(row)!r}")
            key, value = row[0].strip(), row[1].strip()
            if not key:
                raise DataError(f"{path}:{n}: empty id")
            rows.append((n, key, value))
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not a valid CSV line ({exc})") from None
    if not rows:
        raise DataError(f"{path}: {what} is empty")
    return rows


def id_problem(ident: str) -> str | None:
    """Why an image id cannot be a run-file key (`<id>,<0|1>`, read back as CSV), or None when it can."""
    if not ident:
        return "it is empty"
    if any("\udc80" <= c <= "\udcff" for c in ident):
        return "its file name is not valid UTF-8"
    if ident != ident.strip():
        return "it starts or ends with white space"
    if "," in ident or '"' in ident:
        return "it contains a comma or a double quote"
    if not ident.isprintable():
        return "it contains a line break or another control character"
    if strip_image_suffix(ident) != ident:
        return "it ends with an image extension, which readers of run files strip"
    return None


def read_scores_or_run(path: str | Path) -> tuple[dict[str, float], bool]:
    """Read a run or scores file; returns ({id: value}, is_binary_run). Ids may carry an extension."""
    path = Path(path)
    out: dict[str, float] = {}
    rows = read_pairs(path, "run/scores file")
    for n, key, value in rows:
        ident = _strip_ext(key)
        try:
            v = float(value)
        except ValueError:
            raise DataError(f"{path}:{n}: value {value!r} is not a number") from None
        if not math.isfinite(v):
            raise DataError(f"{path}:{n}: value {value!r} is not finite")
        if ident in out:
            raise DataError(f"{path}:{n}: duplicate id {ident!r}")
        out[ident] = v
    binary = all(value in ("0", "1") for _, _, value in rows)
    return out, binary


def read_labels(path: str | Path) -> dict[str, int]:
    """`<id or file name>,<0|1>` per line, no header."""
    path = Path(path)
    out: dict[str, int] = {}
    for n, key, value in read_pairs(path, "labels file"):
        if value not in ("0", "1"):
            raise DataError(f"{path}:{n}: label must be 0 or 1, got {value!r}")
        ident = _strip_ext(key)
        if ident in out:
            raise DataError(f"{path}:{n}: duplicate id {ident!r}")
        out[ident] = int(value)
    return out


_strip_ext = strip_image_suffix


def validate_run(run_path: str | Path, test_dir: str | Path) -> int:
    """Check a run file against a test folder (its real_unknown/ or the folder itself); returns row count."""
    run_path, test_dir = Path(run_path), Path(test_dir)
    folder = test_dir / "real_unknown" if (test_dir / "real_unknown").is_dir() else test_dir
    if folder == test_dir and test_dir.is_dir():
        _check_test_folder(test_dir)
    expected = {e.id for e in list_entries(folder)}
    rows = read_pairs(run_path, "run file")
    seen: set[str] = set()
    for n, key, value in rows:
        ident = _strip_ext(key)
        if value not in ("0", "1"):
            raise DataError(f"{run_path}:{n}: prediction must be 0 or 1, got {value!r}")
        if ident not in expected:
            raise DataError(f"{run_path}:{n}: id {key!r} is not an image of {folder}")
        if ident in seen:
            raise DataError(f"{run_path}:{n}: id {key!r} appears twice")
        seen.add(ident)
    missing = sorted(expected - seen, key=natural_key)
    if missing:
        raise DataError(f"{run_path}: {_count(len(missing), 'test image')} {'has' if len(missing) == 1 else 'have'} "
                        f"no prediction (first: {missing[0]!r})")
    return len(rows)


def _count(n: int, noun: str) -> str:
    """'1 test image', '2 test images'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _check_test_folder(folder: Path) -> None:
    """A folder without real_unknown/ must be the image folder itself: say which folder was meant when it is
    a data root (DATA/test/real_unknown/) or another layout folder."""
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        return
    if (folder / "test" / "real_unknown").is_dir():
        raise DataError(f"{folder}: this is a data root; validate expects the folder holding real_unknown/: "
                        f"--test {folder / 'test'}")
    raise DataError(f"{folder}: no real_unknown/ folder here (subfolders: {', '.join(subfolders[:5])}); validate "
                    "expects the folder holding real_unknown/ (DATA/test for a train/test layout, DATA for a "
                    "one-folder layout) or the real_unknown/ folder itself")


def align(values: dict[str, float], labels: dict[str, int], source: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pair predictions with labels by id; every labelled id must be present."""
    missing = [i for i in labels if i not in values]
    if missing:
        raise DataError(f"{source}: {len(missing)} labelled ids have no value (first: {missing[0]!r})")
    extra = [i for i in values if i not in labels]
    if extra:
        raise DataError(f"{source}: {len(extra)} ids have no label (first: {extra[0]!r})")
    ids = sorted(labels, key=natural_key)
    return ids, np.array([values[i] for i in ids]), np.array([labels[i] for i in ids])
