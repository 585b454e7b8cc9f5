"""Every setting checked before any data is loaded or any epoch is trained (docs/errors.md lists the rules).

* **Unknown keys.** RecBole silently ignores a key it does not read, so ``--learning_rat=0.01`` would train with
  the default learning rate. The known keys are collected from RecBole's own default yaml files (its
  ``overall.yaml``, every dataset and model yaml), RecBole's argument lists, this plugin's ``properties/`` yaml
  files (models, datasets, protocols, analyses, search spaces) and :data:`KEYS_READ_IN_CODE`. A key outside that set
  is an error naming the closest known key. Keys read by your own code are declared with ``extra_keys: [name, ...]``.
* **Values.** Types follow the default of the key (a number stays a number, a flag a boolean, a list a list);
  the keys of :data:`RANGES` are whole numbers or numbers within their bounds; ``metrics``, ``topk`` and
  ``valid_metric`` name metrics RecBole has and agree with each other.
"""

import difflib
import glob
import os
from functools import lru_cache

from recbole_ssr.errors import ConfigError
from recbole_ssr.paths import properties_dir
from recbole_ssr.safe_io import check_writable_folder

EXTRA_KEYS = "extra_keys"

#: keys read by RecBole's or this plugin's code that no default yaml lists
KEYS_READ_IN_CODE = frozenset({
    EXTRA_KEYS, "model", "dataset", "data_format", "dataset_dir", "data_root", "modalities", "feature_item_ids",
    "cold_item_ratio", "cold_item_seed", "tail_ratio", "device", "local_rank", "world_size", "single_spec",
    "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_neg_sample_args", "test_neg_sample_args",
    "valid_metric_bigger", "token_num_threshold", "xgb_early_stopping_rounds",
})

#: key -> (kind, lowest, highest): whole numbers ("int") or real numbers ("float"); None = no bound
RANGES = {
    "epochs": ("int", 1, None),
    "train_batch_size": ("int", 1, None),
    "eval_batch_size": ("int", 1, None),
    "embedding_size": ("int", 1, None),
    "hidden_size": ("int", 1, None),
    "stopping_step": ("int", 0, None),
    "eval_step": ("int", 0, None),
    "seed": ("int", 0, 2 ** 32 - 1),
    "band_num": ("int", 1, None),
    "knn_k": ("int", 1, None),
    "user_knn_k": ("int", 1, None),
    "n_routing": ("int", 0, None),
    "n_layers": ("int", 0, None),
    "num_layers": ("int", 0, None),
    "n_mm_layers": ("int", 0, None),
    "cp_rank": ("int", 1, None),
    "worker": ("int", 0, None),
    "learning_rate": ("float", 0.0, None),
    "weight_decay": ("float", 0.0, None),
    "tau": ("float", 0.0, None),
    "align_weight": ("float", 0.0, None),
    "align_temperature": ("float", 0.0, None),
    "ssl_temp": ("float", 0.0, None),
    "temperature": ("float", 0.0, None),
    "mask_rate": ("float", 0.0, 1.0),
    "dropout": ("float", 0.0, 1.0),
    "dropout_prob": ("float", 0.0, 1.0),
    "cold_item_ratio": ("float", 0.0, 1.0),
}
#: keys whose value must be strictly above the lowest bound
STRICT_LOWER = frozenset({"tau", "align_temperature", "ssl_temp", "temperature"})
#: keys whose default is a list but a single value is accepted (RecBole wraps it)
SCALAR_OR_LIST = frozenset({"topk", "metrics", "use_modalities", "gpu_id"})


def _yaml_keys(path):
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return set()
    return {str(k) for k in loaded} if isinstance(loaded, dict) else set()


def known_keys():
    """Every configuration key RecBole or the plugin reads (see the module docstring)."""
    return _known_keys(properties_dir())


@lru_cache(maxsize=None)
def _known_keys(plugin_properties):
    import recbole
    from recbole.utils import argument_list

    keys = set(KEYS_READ_IN_CODE)
    roots = [os.path.join(os.path.dirname(recbole.__file__), "properties"), plugin_properties]
    for root in roots:
        for path in glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True):
            keys |= _yaml_keys(path)
    keys.discard("search")  # the settings section of a search-space file, not a configuration key
    for name in dir(argument_list):
        value = getattr(argument_list, name)
        if isinstance(value, list):
            keys |= {str(k) for k in value}
    return frozenset(keys)


def closest_key(key):
    match = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.6)
    return match[0] if match else None


def check_known_keys(given, sources):
    """``given``: the keys the user set; ``sources``: key -> where it was set (a file or 'the command line')."""
    extra = given.get(EXTRA_KEYS) or []
    if isinstance(extra, str):
        extra = [extra]
    if not isinstance(extra, (list, tuple)):
        raise ConfigError(f"{EXTRA_KEYS} must be a list of key names (e.g. extra_keys: [my_key]), got {extra!r}.")
    allowed = known_keys() | {str(k) for k in extra}
    for key in given:
        if key in allowed:
            continue
        guess = closest_key(key)
        hint = f"did you mean '{guess}'? " if guess else ""
        raise ConfigError(
            f"unknown configuration key '{key}' (from {sources.get(key, 'the configuration')}); {hint}"
            f"RecBole would silently ignore it. Fix the name, or, if your own code reads it, declare it with "
            f"{EXTRA_KEYS}: [{key}].")


def _kind_of(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return None


_WORDS = {"bool": "True or False", "int": "a whole number", "float": "a number", "str": "a text value",
          "list": "a list, e.g. [a, b]", "dict": "a mapping, e.g. {a: 1}"}


def _type_error(key, value, expected, source):
    return ConfigError(f"{key}={value!r} (from {source}): expected {expected}. Fix the value "
                       f"(e.g. --{key}=VALUE on the command line or '{key}: VALUE' in a yaml).")


def check_range(key, value, source):
    kind, low, high = RANGES[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        raise _type_error(key, value, _WORDS[kind], source)
    too_low = low is not None and (value <= low if key in STRICT_LOWER else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        bounds = (f"> {low}" if key in STRICT_LOWER else f">= {low}") if high is None else f"between {low} and {high}"
        raise ConfigError(f"{key}={value!r} (from {source}) is out of range: expected {_WORDS[kind]} {bounds}.")


def check_types(final, defaults, given, sources):
    """Each key the user set keeps the kind of its default (numbers stay numbers, flags booleans, ...)."""
    for key in given:
        value, default = final.get(key), defaults.get(key)
        source = sources.get(key, "the configuration")
        if key in RANGES and _kind_of(default) in (None, "int", "float"):  # some models use a {modality: k} mapping
            check_range(key, value, source)
            continue
        want, got = _kind_of(default), _kind_of(value)
        if default is None or want is None or value is None and want in ("str", "list", "dict"):
            continue
        numbers = ("int", "float")  # whole numbers are enforced by RANGES only: a yaml's 0 may stand for 0.0
        if want == got or (want in numbers and got in numbers) or (key in SCALAR_OR_LIST and got is not None):
            continue
        raise _type_error(key, value, _WORDS["float" if want == "int" else want], source)


def check_metrics(final, sources):
    """``metrics`` are RecBole metrics, ``topk`` positive whole numbers, ``valid_metric`` one of what is computed."""
    from recbole.evaluator.register import metrics_dict

    metrics = final.get("metrics")
    names = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(m, str) for m in names):
        raise _type_error("metrics", metrics, "a list of metric names, e.g. [Recall, NDCG]",
                          sources.get("metrics", "the configuration"))
    for name in names:
        if name.lower() not in metrics_dict:
            guess = difflib.get_close_matches(name.lower(), metrics_dict, n=1)
            raise ConfigError(f"metrics: '{name}' is not a RecBole metric{'; did you mean ' + repr(guess[0]) + '?' if guess else '.'}"
                              f" Known: {', '.join(sorted(metrics_dict))}.")
    topk = final.get("topk")
    ks = [topk] if isinstance(topk, int) and not isinstance(topk, bool) else topk
    if not isinstance(ks, (list, tuple)) or not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0
                                                               for k in ks):
        raise _type_error("topk", topk, "a positive whole number or a list of them, e.g. [10, 20]",
                          sources.get("topk", "the configuration"))
    valid = final.get("valid_metric")
    if not isinstance(valid, str) or not valid:
        raise _type_error("valid_metric", valid, "a metric name such as Recall@20",
                          sources.get("valid_metric", "the configuration"))
    name, _, k = valid.partition("@")
    computed = [m.lower() for m in names]
    if name.lower() not in computed:
        raise ConfigError(f"valid_metric '{valid}': '{name}' is not among the computed metrics {list(names)}; "
                          f"pick one of them (e.g. valid_metric: {names[0]}@{ks[-1]}) or add it to metrics.")
    if k and (not k.isdigit() or int(k) not in ks):
        raise ConfigError(f"valid_metric '{valid}': the cut-off @{k} is not in topk {list(ks)}; use one of them "
                          "or add it to topk.")


def check_modalities(final, model_class, sources):
    needed = getattr(model_class, "min_modalities", 0)
    selected = final.get("use_modalities")
    if isinstance(selected, str):
        selected = [s for s in selected.split(",") if s]
    if selected is not None and not isinstance(selected, (list, tuple)):
        raise _type_error("use_modalities", selected, "a list of modality names, e.g. [image, text]",
                          sources.get("use_modalities", "the configuration"))
    if selected is not None and len(selected) < needed:
        raise ConfigError(f"use_modalities={list(selected)} selects {len(selected)} modalities, but "
                          f"{model_class.__name__} needs at least {needed}; name one (e.g. use_modalities: [image]) "
                          "or leave use_modalities out to use every modality of the dataset.")


def validate(final, defaults, given, sources, model_class=None):
    """Raise :class:`ConfigError` for the first setting that is unknown, of the wrong type or out of range."""
    check_known_keys(given, sources)
    check_types(final, defaults, given, sources)
    check_metrics(final, sources)
    if model_class is not None:
        check_modalities(final, model_class, sources)


def check_output_locations(config):
    """``checkpoint_dir``, ``cache_dir`` and RecBole's log folders (``./log``, ``./log_tensorboard``) can be
    written: found before the data is loaded, not at the first checkpoint or after the last epoch."""
    check_writable_folder(config["checkpoint_dir"], "checkpoint_dir", "set --checkpoint_dir=DIR to a folder you can "
                                                                       "write to")
    if config["cache_dir"]:
        check_writable_folder(config["cache_dir"], "cache_dir", "set --cache_dir=DIR to a folder you can write to, "
                                                               "or --cache_dir=~ for no cache")
    for folder in ("log", "log_tensorboard"):
        check_writable_folder(os.path.abspath(folder), "RecBole's log folder",
                              "run from a working directory you can write to")
