"""recbole-ssr: SSR (Structured Spectral Reasoning) and multimodal baselines as a RecBole 1.2.1 plugin.

The layers, bottom up (each imports only the ones below it; tests/test_layout.py pins it): ``core/`` (errors,
files, the RecBole fixes), ``data/`` and ``model/`` (side by side), ``config/``, ``training/``, ``experiments/``
(one run, many runs, searches, analyses), this package's Python API and ``cli.py``, the command line.

The Python API, under the names RecBole users know (imported on first use, so ``import recbole_ssr`` stays light)::

    from recbole_ssr import run_recbole_ssr, load_data_and_model
    result = run_recbole_ssr(model="SSR", dataset="ml-100k", config_dict={"epochs": 5})
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(result["checkpoint"])

Your own model (``--model=path/to/file.py:ClassName``, README "Benchmark your own model") subclasses
``from recbole_ssr import MultimodalRecommender`` (or ``GraphRecommender``; :mod:`recbole_ssr.model.abstract`).
"""

from recbole_ssr.core import compat

__version__ = "0.1.0"

# RecBole is installed separately (recbole_ssr/core/deps.py). Importing the package never fails on it, so the command
# line can say what to run in one line; the first module that imports RecBole raises ImportError with the same fix.
RECBOLE_PROBLEM = compat.install()

#: public name -> the module that defines it (PEP 562: imported when first asked for)
API = {
    "run_recbole_ssr": "recbole_ssr.experiments.run",
    "load_data_and_model": "recbole_ssr.training.build",
    "MultimodalRecommender": "recbole_ssr.model.abstract",
    "GraphRecommender": "recbole_ssr.model.abstract",
}


def __getattr__(name):
    if name in API:
        import importlib

        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'recbole_ssr' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(API))
