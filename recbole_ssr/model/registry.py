"""The one place a model name becomes a model class: the plugin's own models first (``recbole_ssr/model/<name>.py``
holds class ``<Name>``, RecBole's convention: ``freedom.py`` <-> ``FREEDOM``), then RecBole's (the RecBole-GNN
pattern). Imports nothing of the package but :mod:`recbole_ssr.core.errors` (and, when asked, the model files)."""

import importlib
import importlib.util
import pkgutil

from recbole.utils import get_model as recbole_get_model

from recbole_ssr.core.errors import ConfigError

PLUGIN_MODEL_PACKAGE = "recbole_ssr.model"


def plugin_model_names():
    """Model classes shipped by the plugin: file ``freedom.py`` <-> class ``FREEDOM``."""
    import recbole_ssr.model as package
    from recbole.model.abstract_recommender import AbstractRecommender

    names = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PLUGIN_MODEL_PACKAGE}.{info.name}")
        for attr in dir(module):
            obj = getattr(module, attr)
            if (isinstance(obj, type) and issubclass(obj, AbstractRecommender) and attr.lower() == info.name
                    and obj.__module__ == module.__name__):
                names.append(attr)
    return sorted(names)


def recbole_general_model_names():
    import recbole.model.general_recommender as package

    return sorted(
        attr for info in pkgutil.iter_modules(package.__path__)
        for attr in dir(importlib.import_module(f"recbole.model.general_recommender.{info.name}"))
        if attr.lower() == info.name
    )


def get_model(name):
    """The model class called ``name``: ours (``recbole_ssr.model.<name lower>``) first, then RecBole's."""
    if not isinstance(name, str):
        return name
    module_path = f"{PLUGIN_MODEL_PACKAGE}.{name.lower()}"
    if importlib.util.find_spec(module_path) is not None:
        module = importlib.import_module(module_path)
        candidate = getattr(module, name, None)
        if isinstance(candidate, type):
            return candidate
    try:
        return recbole_get_model(name)
    except (ValueError, ModuleNotFoundError, AttributeError):
        raise ConfigError(
            f"unknown model '{name}'. Multimodal models: {', '.join(plugin_model_names())}. "
            f"RecBole general models: {', '.join(recbole_general_model_names())} (plus RecBole's other model types)."
        ) from None


def is_plugin_model(model_class):
    return model_class.__module__.startswith(PLUGIN_MODEL_PACKAGE)
