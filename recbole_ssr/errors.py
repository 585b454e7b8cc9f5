"""User-facing errors: the runner prints their message (``error: ...``) and exits non-zero, without a traceback.

Every message names the file or key at fault, what was expected, and how to fix it.
"""


class RecboleSSRError(Exception):
    """Base class of the errors a user can fix (bad input, bad configuration)."""


class DataError(RecboleSSRError, ValueError):
    """A dataset file is missing, malformed, or inconsistent."""


class ConfigError(RecboleSSRError, ValueError):
    """A configuration key, model name, or command-line option is invalid."""
