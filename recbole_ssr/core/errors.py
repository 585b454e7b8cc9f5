"""User-facing errors: the runner prints their message (``error: ...``) and exits non-zero, without a traceback.

Every message names the file or key at fault, what was expected, and how to fix it.
"""


class RecboleSSRError(Exception):
    """Base class of the errors a user can fix (bad input, bad configuration)."""


class DataError(RecboleSSRError, ValueError):
    """A dataset file is missing, malformed, or inconsistent."""


class ConfigError(RecboleSSRError, ValueError):
    """A configuration key, model name, or command-line option is invalid."""


def yaml_error_text(exc):
    """A ``yaml.YAMLError`` as one line: ``at line L, column C: <problem>``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return where + problem


class UsageError(ConfigError):
    """A command-line option argparse refuses (an unknown choice, a value of the wrong type)."""


def one_line_parser(**kwargs):
    """An ``argparse.ArgumentParser`` whose errors are a :class:`UsageError` (the command prints it as one
    ``error:`` line, like every other error) instead of a usage dump on stderr."""
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(f"{message} (run with --help for the options).")

    return OneLineParser(**kwargs)


class TrainingDiverged(RecboleSSRError):
    """The training loss became NaN: the message names the model and the settings to lower."""
