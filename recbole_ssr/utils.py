"""Model / trainer / dataset lookup: the plugin's own first, then RecBole's (the RecBole-GNN pattern)."""

import importlib
import os
import pkgutil

from recbole_ssr import compat
from recbole_ssr.errors import ConfigError, DataError

compat.apply()

from recbole.data import create_dataset as recbole_create_dataset  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import ModelType  # noqa: E402
from recbole.utils import get_model as recbole_get_model  # noqa: E402
from recbole.utils import get_trainer as recbole_get_trainer  # noqa: E402

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
    from recbole_ssr.trainer import MultimodalTrainer, with_checkpoint_fix

    model_class = get_model(model_name)
    if is_plugin_model(model_class):
        return getattr(model_class, "trainer_class", MultimodalTrainer)
    trainer = recbole_get_trainer(model_type, model_name)
    return MultimodalTrainer if trainer is Trainer else with_checkpoint_fix(trainer)


def _modality_file_names(config):
    spec = config["modalities"] if "modalities" in config else None
    if isinstance(spec, dict):
        return list(spec.values())
    if isinstance(spec, (list, tuple)):
        return [f"{m}_feat.npy" for m in spec]
    return []


def create_dataset(config):
    """Locate, convert (MMRec, once, cached) and load the dataset named in ``config``.

    General models get :class:`~recbole_ssr.data.dataset.MultimodalDataset` (RecBole's ``Dataset`` + aligned
    features); other RecBole model types get RecBole's own dataset class on the same converted files.
    """
    from recbole_ssr.data.dataset import MultimodalDataset
    from recbole_ssr.data.default import DEFAULT_DATASET, build_default_dataset
    from recbole_ssr.data.features import check_modalities_agree, feature_row_count
    from recbole_ssr.data.source import convert_mmrec, detect_layout, missing_dataset_error

    name = config["dataset"]
    folder = config["dataset_dir"] if "dataset_dir" in config and config["dataset_dir"] else config["data_path"]
    config["dataset_dir"] = folder
    declared = config["data_format"] if "data_format" in config else None
    if name == DEFAULT_DATASET and not os.path.isfile(os.path.join(folder, f"{name}.inter")):
        build_default_dataset(folder)
    layout = detect_layout(folder, name, declared)
    if layout is None:
        raise missing_dataset_error(folder, name, _modality_file_names(config))

    check_modalities_agree(config, folder)
    protocol = config["eval_protocol"]
    if layout == "mmrec":
        converted = convert_mmrec(folder, name, cache_dir_or_scratch(config), feature_row_count(config, folder),
                                  require_split=(protocol == "mmrec"))
        config["data_path"] = converted
        with open(os.path.join(converted, f"{name}.inter"), "r", encoding="utf-8") as f:
            columns = [c.split(":")[0] for c in f.readline().strip().split("\t")]
        config["load_col"] = {"inter": columns, "item": ["item_id"]}
        config["USER_ID_FIELD"], config["ITEM_ID_FIELD"] = "user_id", "item_id"
        config["RATING_FIELD"] = "rating" if "rating" in columns else None
        config["TIME_FIELD"] = "timestamp" if "timestamp" in columns else None
    if protocol == "mmrec" or config["benchmark_filename"]:
        # the fixed split: always under mmrec; under recbole only when benchmark_filename asks for it
        config["benchmark_filename"] = ["train", "valid", "test"]
        missing = [f"{name}.{p}.inter" for p in ("train", "valid", "test")
                   if not os.path.isfile(os.path.join(config["data_path"], f"{name}.{p}.inter"))]
        if missing:
            raise DataError(
                f"eval_protocol 'mmrec' needs a fixed split, but {', '.join(missing)} are missing in {folder}. "
                "Provide the split (MMRec: an x_label column; RecBole atomic: <ds>.train/.valid/.test.inter), "
                "or run with --eval_protocol=recbole to draw a random split."
            )
    _apply_cold_item_split(config, name)

    if config["MODEL_TYPE"] == ModelType.GENERAL:
        return MultimodalDataset(config)
    return recbole_create_dataset(config)


def _apply_cold_item_split(config, name):
    """``cold_item_ratio > 0``: read the fixed split from its item cold-start version (recbole_ssr.data.cold_split)."""
    from recbole_ssr.data.cold_split import apply_cold_item_split, cold_split_settings

    ratio, seed = cold_split_settings(config)
    if ratio <= 0:
        return
    if not config["benchmark_filename"]:
        raise ConfigError(
            "cold_item_ratio needs the fixed train/valid/test split: use eval_protocol mmrec (MMRec folders) or "
            "give the split files with benchmark_filename (eval_protocol recbole draws a random split).")
    config["data_path"] = apply_cold_item_split(config["data_path"], name, config["ITEM_ID_FIELD"], ratio, seed,
                                                cache_dir_or_scratch(config))


_SCRATCH = []


def cache_dir_or_scratch(config):
    """``cache_dir``, or with ``cache_dir: ~`` a private temporary folder removed when the process exits (the
    converted files are read into memory once, so nothing is cached between runs)."""
    if config["cache_dir"]:
        return config["cache_dir"]
    if not _SCRATCH:
        import atexit
        import shutil
        import tempfile

        _SCRATCH.append(tempfile.mkdtemp(prefix="recbole-ssr-scratch-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]
