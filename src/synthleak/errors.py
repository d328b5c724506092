"""User-facing errors: the CLI prints these as one line and exits non-zero, never a traceback."""


class SynthleakError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class DataError(SynthleakError):
    """Bad or missing input data (names the file and the problem)."""


class CheckpointError(SynthleakError):
    """A model file that cannot be loaded safely or does not fit the model."""


class OutputExistsError(SynthleakError):
    """Refusing to overwrite an existing output without --force."""
