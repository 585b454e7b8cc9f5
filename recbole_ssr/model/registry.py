"""Model / trainer / dataset lookup: the plugin's own first, then RecBole's (the RecBole-GNN pattern)."""

import importlib
import pkgutil

from recbole.data import create_dataset as recbole_create_dataset
from recbole.trainer import Trainer
from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_ssr.core.errors import ConfigError
from recbole_ssr.data.dataset import MultimodalDataset
from recbole_ssr.data.source import prepare_source
from recbole_ssr.training.trainer import MultimodalTrainer, with_checkpoint_fix

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


def get_trainer(model_type, model_name):
    """Our trainer for plugin models and for RecBole models that use the plain ``Trainer``; else RecBole's own
    (with our checkpoint loading), since those trainers carry model-specific training loops."""
    model_class = get_model(model_name)
    if is_plugin_model(model_class):
        return getattr(model_class, "trainer_class", MultimodalTrainer)
    trainer = recbole_get_trainer(model_type, model_name)
    return MultimodalTrainer if trainer is Trainer else with_checkpoint_fix(trainer)


def create_dataset(config):
    """Prepare the dataset's source once (:func:`recbole_ssr.data.source.prepare_source`: locate, convert MMRec
    folders, cold-split) and load it.

    General models get :class:`~recbole_ssr.data.dataset.MultimodalDataset` (RecBole's ``Dataset`` + aligned
    features); other RecBole model types get RecBole's own dataset class on the same converted files.
    """
    prepare_source(config)
    if config["MODEL_TYPE"] == ModelType.GENERAL:
        return MultimodalDataset(config)
    return recbole_create_dataset(config)
