"""The error raised for every problem a user can fix in ``python -m recbole_ssr.data.prepare``."""

try:  # share the project's base class, so the runner and other CLIs treat it like any other data error
    from recbole_ssr.core.errors import DataError as _Base
except ImportError:  # pragma: no cover - the package is always installed with recbole_ssr.core.errors
    _Base = ValueError


class PrepareError(_Base):
    """Bad raw input or options: the message names the file/column/option, what was expected, and the fix.

    Derives from ``ValueError`` (through ``recbole_ssr.core.errors.DataError``); the command line prints
    ``error: <message>`` and exits with status 1, without a traceback.
    """
