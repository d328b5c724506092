"""Finding the ImageCLEFmedical GANs layout on disk and loading it into an AuditData."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dicom import Window, parse_window
from .images import ImageSet, load_folder, strip_image_suffix
from .stream import ImageSource, LazyImageSet, concat_images
from .runfile import id_problem, read_pairs

GENERATED = "generated"
REAL_USED = "real_used"
REAL_NOT_USED = "real_not_used"
REAL_UNKNOWN = "real_unknown"
GROUPS_FROM = ("dicom",)


@dataclass
class AuditData:
    """Everything an audit may look at. Test labels are deliberately not part of it.

    Synthetic images (`generated`, `test_generated`) found on disk are LazyImageSets, read from their
    files in chunks when used; reals (thousands, not millions) are ImageSets in memory. Code that
    builds an AuditData in memory may pass ImageSets for the synthetic images too.
    """

    generated: ImageSource
    real_used: ImageSet | None = None
    real_not_used: ImageSet | None = None
    real_unknown: ImageSet | None = None
    test_generated: ImageSource | None = None
    groups: dict[str, str] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    window: Window | None = None  # the CT window DICOM CT images were read with
    #: labelled() of the current real_used / real_not_used objects: concatenated once, shared by every caller
    #: (who must not change it in place)
    _labelled: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def count_converted(self, kind: str) -> int:
        """How many loaded images were converted from `kind` (a PIL mode, or "DICOM")."""
        return sum(s.converted.get(kind, 0) for s in _sets(self))

    @property
    def has_labelled(self) -> bool:
        return bool(self.real_used is not None and self.real_not_used is not None
                    and len(self.real_used) and len(self.real_not_used))

    def synthetic(self, pool: str = "all") -> ImageSource:
        """Synthetic images to compare against.

        'all' pools train and test generated images (one generator, as in the 2025 task and
        bench-iqoth); 'train' uses only train/generated.
        """
        if pool == "train" or self.test_generated is None:
            return self.generated
        if pool != "all":
            raise ValueError(f"unknown synthetic pool {pool!r}")
        return concat_images([self.generated, self.test_generated])

    def labelled(self) -> tuple[ImageSet, np.ndarray]:
        """Labelled reals (used first, then not used) and their labels (1 = used)."""
        if not self.has_labelled:
            raise DataError("this method needs labelled reals (real_used/ and real_not_used/), none were found")
        key = (id(self.real_used), id(self.real_not_used))
        if self._labelled is None or self._labelled[0] != key:
            images = ImageSet.concat([self.real_used, self.real_not_used])
            y = np.r_[np.ones(len(self.real_used), int), np.zeros(len(self.real_not_used), int)]
            self._labelled = (key, images, y)
        return self._labelled[1], self._labelled[2]

    def labelled_groups(self) -> np.ndarray | None:
        """Group (e.g. patient) of each labelled real, or None when no groups file was given."""
        if self.groups is None or not self.has_labelled:
            return None
        images, _ = self.labelled()
        return np.array([self.groups.get(i, f"__id__{i}") for i in images.ids])


def _optional(folder: Path, name: str, window: Window, required: bool = False, lazy: bool = False
              ) -> ImageSource | None:
    path = folder / name
    if not path.exists():
        if required:
            raise DataError(f"{path}: folder does not exist")
        return None
    return LazyImageSet.from_folder(path, window=window) if lazy else load_folder(path, window=window)


def read_groups(path: Path) -> dict[str, str]:
    """`<id or file name>,<group>` per line, no header; ids are file stems."""
    groups: dict[str, str] = {}
    for n, key, group in read_pairs(path, "groups file", "<id>,<group>"):
        ident = strip_image_suffix(key)
        if not group:
            raise DataError(f"{path}:{n}: empty group for {ident!r}")
        if groups.get(ident, group) != group:
            raise DataError(f"{path}:{n}: {ident!r} is in group {group!r} here and {groups[ident]!r} above")
        groups[ident] = group
    return groups


def discover(
    data: str | Path | None = None,
    train: str | Path | None = None,
    test: str | Path | None = None,
    groups: str | Path | None = None,
    need_unknown: bool = True,
    *,
    window: Window | str | None = None,
    groups_from: str | None = None,
) -> AuditData:
    """Find and load the challenge layout.

    Accepted forms: DATA with generated/, real_used/, real_not_used/, real_unknown/; DATA with
    train/ and test/ subfolders; or explicit --train and --test folders (each with generated/).
    `window` is the CT window for DICOM CT images (`lung`, the default, `mediastinum`, `W,L` or a
    Window); `groups_from="dicom"` takes each real DICOM image's group from its PatientID.
    """
    window = parse_window(window)
    if groups_from is not None and groups_from not in GROUPS_FROM:
        raise DataError(f"--groups-from {groups_from!r}: unknown source (choose from {', '.join(GROUPS_FROM)})")
    if groups_from is not None and groups is not None:
        raise DataError("--groups and --groups-from cannot be combined: give one source of groups")
    group_table = read_groups(Path(groups)) if groups is not None else None  # a bad file fails before loading
    if data is None and (train is None or test is None):
        raise DataError("give a data folder, or both --train DIR and --test DIR")
    if data is not None and (train is not None or test is not None):
        raise DataError("give either a data folder or --train/--test, not both")
    if data is not None:
        root = Path(data)
        if not root.exists():
            raise DataError(f"{root}: folder does not exist")
        if not root.is_dir():
            raise DataError(f"{root}: not a folder")
        if (root / "train").is_dir() and (root / "test").is_dir():
            train, test = root / "train", root / "test"
        elif (root / GENERATED).is_dir():
            train = test = root
        else:
            raise DataError(
                f"{root}: no challenge layout found (expected generated/ and real_* folders, or train/ and test/)"
            )
    train, test = Path(train), Path(test)
    for p in (train, test):
        if not p.is_dir():
            raise DataError(f"{p}: folder does not exist")
    generated = _optional(train, GENERATED, window, required=True, lazy=True)
    used = _optional(train, REAL_USED, window)
    not_used = _optional(train, REAL_NOT_USED, window)
    if (used is None) != (not_used is None):
        missing = REAL_NOT_USED if not_used is None else REAL_USED
        raise DataError(f"{train / missing}: folder missing (labelled reals need both real_used/ and real_not_used/)")
    unknown = _optional(test, REAL_UNKNOWN, window, required=need_unknown)
    test_generated = None
    if test != train:
        test_generated = _optional(test, GENERATED, window, lazy=True)
    audit = AuditData(
        generated=generated,
        real_used=used,
        real_not_used=not_used,
        real_unknown=unknown,
        test_generated=test_generated,
        source=str(data if data is not None else f"{train} + {test}"),
        window=window,
    )
    _check_ids(audit)
    if group_table is not None:
        audit.groups = group_table
        _check_group_cover(audit, str(groups), "no labelled real image id appears in the groups file",
                           "have no group")
    elif groups_from == "dicom":
        audit.groups = {k: v for s in _reals(audit) for k, v in s.patients.items()}
        if not audit.groups:
            raise DataError("--groups-from dicom: no real image is a DICOM file with a PatientID")
        _check_group_cover(audit, "--groups-from dicom", "no labelled real image is a DICOM file with a PatientID",
                           "are not DICOM files with a PatientID")
    resized = sum(s.resized for s in _sets(audit))
    if resized:
        audit.notes.append(f"{resized} images were not 256x256 and were resized")
    return audit


def _check_group_cover(audit: AuditData, source: str, none_message: str, missing_message: str) -> None:
    """Labelled reals without a group count as their own group (a warning); none with a group is an error."""
    if not audit.has_labelled:
        return
    ids = audit.real_used.ids + audit.real_not_used.ids
    missing = [i for i in ids if i not in audit.groups]
    if len(missing) == len(ids):
        raise DataError(f"{source}: {none_message} (first labelled id: {ids[0]!r})")
    if missing:
        warnings.warn(f"{source}: {len(missing)} of {len(ids)} labelled reals {missing_message} and count as "
                      f"their own group (first: {missing[0]!r})", stacklevel=3)


def _reals(audit: AuditData) -> list[ImageSet]:
    return [s for s in (audit.real_used, audit.real_not_used, audit.real_unknown) if s is not None]


def _sets(audit: AuditData) -> list[ImageSource]:
    return [s for s in (audit.generated, audit.test_generated, audit.real_used, audit.real_not_used,
                        audit.real_unknown) if s is not None]


def _check_ids(audit: AuditData) -> None:
    """Real image ids must be unique across real folders: run files and labels are keyed by id."""
    seen: dict[str, Path] = {}
    for s in _reals(audit):
        for i, name in zip(s.ids, s.names):
            where = (s.folder / name) if s.folder else Path(name)
            problem = id_problem(i)
            if problem:
                raise DataError(f"{where}: image id {i!r} cannot be written to a run file ({problem}); rename the file")
            if i in seen:
                raise DataError(f"{where}: duplicate image id {i!r} (also {seen[i]})")
            seen[i] = where
    if audit.real_unknown is not None and audit.has_labelled:
        labelled_hashes = set(audit.real_used.hashes) | set(audit.real_not_used.hashes)
        overlap = sum(h in labelled_hashes for h in audit.real_unknown.hashes)
        if overlap:
            warnings.warn(f"{overlap} real_unknown images are pixel-identical to labelled reals", stacklevel=3)
