"""RecBole 1.2.1 on today's stack: every fix in one place, installed once by ``import recbole_ssr``.

RecBole 1.2.1 (Feb 2025) is the last release. On Python 3.11 + torch 2.13 + numpy 2 + scipy >= 1.13 it breaks in
the places below (each fix says what breaks and why). :func:`install` runs when the package is imported - Python
imports a package before any of its modules - so every process that uses ``recbole_ssr`` (the CLI, tests, each Ray
worker) gets the same fixes, and no module of the package repeats them. Nothing here sets a process-wide
environment variable.

When RecBole is missing or is another version, :func:`install` applies nothing: importing the package still works
(the command line prints one ``error:`` line with the fix), and the first module that imports RecBole raises
``ImportError`` with the same line (:class:`RecBoleUnusable`).

What is *not* here, on purpose:
- ``torch.load(weights_only=False)`` is scoped to loading our own checkpoints in :mod:`recbole_ssr.training.checkpoint`
  (files this package wrote); it is never changed globally.
- pandas 3 (copy-on-write turns RecBole's in-place ``fillna`` into a silent no-op and changes ``Series.agg(len)``)
  is avoided by the ``pandas<3`` pin in setup.cfg; :func:`check_versions` reports a violation clearly.
- RecBole's ``quick_start`` (imports ``ray.tune`` at import time, calls the removed ``tune.report(**kw)``) is never
  imported: the plugin has its own :mod:`recbole_ssr.experiments.run`.
"""

import sys

import numpy as np
import scipy.sparse as sp

from recbole_ssr.core.deps import recbole_problem

_APPLIED = False


def _restore_numpy_aliases():
    """numpy 2 removed ``np.float_``/``np.complex_``/``np.unicode_``.

    ``recbole.config.Config.compatibility_settings`` reads them to recreate the even older aliases
    (``np.float``, ``np.long``, ...) that RecBole's metrics still use, and crashes when they are missing.
    Restoring these three lets RecBole do the rest itself.
    """
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, old):
            setattr(np, old, new)
    # RecBole code paths that run before any Config exists (e.g. evaluator imports in a fresh Ray worker)
    # also use these; set them the same way RecBole's Config would.
    for old, new in (("bool", np.bool_), ("int", np.int_), ("float", np.float64), ("complex", np.complex128),
                     ("object", np.object_), ("str", np.str_), ("long", np.int_), ("unicode", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)


def _restore_dok_update():
    """scipy >= 1.13 removed ``dok_matrix._update``.

    RecBole's own LightGCN / NGCF / NCL / GCMC / SpectralCF build their adjacency with
    ``A._update(dict(zip(keys, values)))``. Restore it as the plain dict update it used to be
    (our own models never use ``dok``; they build adjacency with torch/coo in :mod:`recbole_ssr.model.graph`).
    """
    if hasattr(sp.dok_matrix, "_update"):
        return

    def _update(self, data):
        for key, value in dict(data).items():
            self[key] = value

    sp.dok_matrix._update = _update


def check_versions():
    """Fail early, with a fix, on a stack RecBole 1.2.1 cannot run on."""
    import pandas as pd

    major = int(pd.__version__.split(".")[0])
    if major >= 3:
        raise RuntimeError(
            f"pandas {pd.__version__} is installed, but RecBole 1.2.1 needs pandas<3 (copy-on-write makes its "
            "in-place fillna a silent no-op). Fix: pip install 'pandas<3' (the project's setup.cfg pins it)."
        )


def _silence_recbole_future_warnings():
    """RecBole 1.2.1 triggers pandas' chained-assignment FutureWarning (``feat[field].fillna(..., inplace=True)``,
    harmless under the ``pandas<3`` pin) and torch's ``torch.cuda.amp.GradScaler`` deprecation on every run: five
    lines of noise before each message of ours. Only FutureWarnings raised from RecBole's own modules are hidden."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole(\.|$)")


def apply():
    """Apply every fix once per process (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _silence_recbole_future_warnings()
    _restore_numpy_aliases()
    _restore_dok_update()
    check_versions()
    _APPLIED = True


class RecBoleUnusable:
    """An import hook (``sys.meta_path``) placed when RecBole is missing or another version: any later import of
    ``recbole`` or its modules raises ``ImportError(problem)``, the one line that names the fix."""

    def __init__(self, problem):
        self.problem = problem

    def find_spec(self, name, path=None, target=None):
        if name == "recbole" or name.startswith("recbole."):
            raise ImportError(self.problem, name=name)
        return None


def install():
    """Called once by ``import recbole_ssr``: the fixes when RecBole 1.2.1 is importable (returns None), else the
    :class:`RecBoleUnusable` hook (returns the problem line, :func:`recbole_ssr.core.deps.recbole_problem`)."""
    problem = recbole_problem()
    if problem is None:
        apply()
    elif not any(isinstance(finder, RecBoleUnusable) for finder in sys.meta_path):
        sys.meta_path.insert(0, RecBoleUnusable(problem))
    return problem
