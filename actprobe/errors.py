"""The exception and warning types that actprobe raises.

Every error a user can cause is an ``ActprobeError``: the CLI prints its message as one line and
exits with code 2. Failures while recording never raise into the training loop; they are reported
once as an ``ActprobeWarning`` and recording stops.
"""


class ActprobeError(Exception):
    """Base class of every error actprobe raises on purpose."""


class OptionError(ActprobeError, ValueError):
    """An option passed to the API has a wrong type or value."""


class SelectionError(ActprobeError):
    """``select`` matches no module of the model."""


class RunFileError(ActprobeError):
    """The run file cannot be created, is locked by another writer, or already exists."""


class FormatError(ActprobeError):
    """A file is missing, is not HDF5, is not an actprobe file, or has an unsupported version."""


class ActprobeWarning(UserWarning):
    """A problem while recording: reported once, training goes on."""


class ModelFileError(ActprobeError):
    """A model file given to ``actprobe run`` cannot be loaded or breaks its contract."""


class DataError(ActprobeError):
    """A data set cannot be found or read, or ``data()`` yields batches of the wrong form."""
