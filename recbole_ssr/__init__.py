"""recbole-ssr: SSR (Structured Spectral Reasoning) and multimodal baselines as a RecBole 1.2.1 plugin.

The layers, bottom up (each imports only the ones below it; tests/test_layout.py pins it): ``core/`` (errors,
files, the RecBole fixes), ``data/`` and ``model/`` (side by side), ``config/``, ``training/``, ``experiments/``
(one run, many runs, searches, analyses) and ``cli.py``, the command line.
"""

from recbole_ssr.core import compat

__version__ = "0.1.0"

# RecBole is installed separately (recbole_ssr/core/deps.py). Importing the package never fails on it, so the command
# line can say what to run in one line; the first module that imports RecBole raises ImportError with the same fix.
RECBOLE_PROBLEM = compat.install()
