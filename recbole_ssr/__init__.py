"""recbole-ssr: SSR (Structured Spectral Reasoning) and multimodal baselines as a RecBole 1.2.1 plugin."""

from recbole_ssr.core import compat, deps

__version__ = "0.1.0"

# RecBole is installed separately (see recbole_ssr/core/deps.py). Importing the package never fails on it, so the command
# line can say what to run in one line; the modules that need RecBole raise ImportError with the same fix.
RECBOLE_PROBLEM = deps.recbole_problem()
if RECBOLE_PROBLEM is None:
    compat.apply()
