"""`--set KEY=VALUE` options, declared: every method and feature space that reads a key declares it in a
frozen dataclass (type, default, one line of help), so a key nobody reads or a value of the wrong type is
a user error before any work starts, and `synthleak methods --details NAME` can list what a method takes.

    @dataclass(frozen=True)
    class DensityRatioOptions(Options):
        k_real: int = option(20, "the reals' neighbour whose distance sets the real density scale")

    opts = DensityRatioOptions.read(cfg.options)   # typed, defaulted, checked
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from .errors import SynthleakError

S = TypeVar("S", bound="Options")
_CASTS = {"int": int, "float": float, "str": str}


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, minimum: float | None = None):
    """A declared `--set` key: its default, a line of help, and optionally its allowed values or minimum."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum})


@dataclass(frozen=True)
class Options:
    """Base of every options dataclass: fields are `--set` keys (types int, float, str, or `X | None`)."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def _cast(cls, name: str):
        kind = str(next(f for f in fields(cls) if f.name == name).type).replace(" | None", "")
        return _CASTS[kind]

    @classmethod
    def read(cls: type[S], options: Mapping[str, str]) -> S:
        """The declared keys of `options` (strings from `--set`) cast to their types; absent keys keep their
        defaults; keys declared by other classes are left to them (check_options rejects unknown ones)."""
        values = {}
        for f in fields(cls):
            if f.name not in options:
                continue
            raw = options[f.name]
            cast = cls._cast(f.name)
            try:
                value = cast(raw)
            except (TypeError, ValueError):
                raise SynthleakError(f"--set {f.name}={raw!r}: expected {'an' if cast is int else 'a'} "
                                     f"{cast.__name__}") from None
            choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
            if choices and value not in choices:
                raise SynthleakError(f"--set {f.name}={raw!r}: choose from {', '.join(choices)}")
            if minimum is not None and value < minimum:
                raise SynthleakError(f"--set {f.name}={raw!r}: must be at least {minimum:g}")
            values[f.name] = value
        return cls(**values)

    @classmethod
    def describe(cls) -> list[str]:
        """One line per key: `key (type, default D): help`."""
        lines = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else None
            default = "none" if default is None else default
            kind = str(f.type).replace(" | None", "")
            extra = f"; one of {', '.join(f.metadata['choices'])}" if f.metadata.get("choices") else ""
            lines.append(f"{f.name} ({kind}, default {default}{extra}): {f.metadata.get('help', '')}")
        return lines


def check_options(options: Mapping[str, str], classes: Iterable[type[Options]], what: str,
                  flags: Iterable[str] = ()) -> None:
    """A one-line user error for a `--set` key that none of `classes` declares, naming the valid keys;
    and every value cast and checked once, before any work. `flags`: keys that have a flag of their own
    (`epochs` is `--epochs`), named both ways in the message."""
    flags = set(flags)
    classes = list(classes)
    valid = sorted({key for cls in classes for key in cls.keys()})
    for key in options:
        if key not in valid:
            given = f"--set {key}={options[key]!r}"
            if key in flags:
                given = f"--{key.replace('_', '-')} {options[key]} ({given})"
            raise SynthleakError(f"{given}: not an option of {what} (valid keys: "
                                 f"{', '.join(valid) if valid else 'none'}; see `synthleak methods --details NAME`)")
    for cls in classes:
        cls.read(options)
