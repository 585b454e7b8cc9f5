"""The one dependency that cannot be declared in setup.cfg: RecBole itself.

recbole 1.2.1 (the last release, the one this plugin is written against) declares ``ray>=1.13.0,<=2.6.3``. Those
Ray releases need numpy<2 and have no wheels for current Python, while this package needs ``ray[tune]>=2.7`` (and
numpy 2 works). A resolver asked for both fails, so ``install_requires`` holds RecBole's real runtime needs instead
and RecBole itself is installed without its dependencies: ``pip install --no-deps recbole==1.2.1`` (the Makefile
does it). This module checks, cheaply and without importing RecBole, that it was done.
"""

import importlib.util
import shlex
import sys

RECBOLE_VERSION = "1.2.1"


def fix_command():
    """The exact command that installs RecBole into the running interpreter's environment."""
    return f"{shlex.quote(sys.executable)} -m pip install --no-deps recbole=={RECBOLE_VERSION}"


def recbole_problem():
    """``None`` when RecBole 1.2.1 is importable; otherwise one line saying what is wrong and the command that
    fixes it. Looks at import specs and package metadata only (no RecBole import)."""
    try:
        found = importlib.util.find_spec("recbole") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        what = "RecBole is not installed"
    else:
        from importlib import metadata

        try:
            version = metadata.version("recbole")
        except metadata.PackageNotFoundError:
            return None  # importable without metadata (e.g. a source checkout on PYTHONPATH): trust it
        if version == RECBOLE_VERSION:
            return None
        what = f"RecBole {version} is installed"
    return (f"recbole-ssr needs recbole=={RECBOLE_VERSION}, but {what}. RecBole is installed without its "
            f"dependencies (its ray<=2.6.3 pin conflicts with current Ray/numpy; recbole-ssr declares what it really "
            f"needs). Fix: {fix_command()}")
