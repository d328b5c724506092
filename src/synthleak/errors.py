"""User-facing errors: the CLI prints these as one line and exits non-zero, never a traceback."""


def one_line(text: str) -> str:
    """`text` with line breaks, other control characters and undecodable file-name bytes escaped."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SynthleakError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __str__(self) -> str:
        # File names may hold line breaks or other control characters; the message stays one line.
        return one_line(super().__str__())


class DataError(SynthleakError):
    """Bad or missing input data (names the file and the problem)."""


class CheckpointError(SynthleakError):
    """A model file that cannot be loaded safely or does not fit the model."""


class OutputExistsError(SynthleakError):
    """Refusing to overwrite an existing output without --force."""
