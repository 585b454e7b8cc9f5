"""Every setting checked before any data is loaded or any epoch is trained (docs/errors.md lists the rules).

* **Unknown keys.** RecBole silently ignores a key it does not read, so ``--learning_rat=0.01`` would train with
  the default learning rate. The known keys are collected from RecBole's own default yaml files (its
  ``overall.yaml``, every dataset and model yaml), RecBole's argument lists, this plugin's ``properties/`` yaml
  files (models, datasets, protocols, analyses, search spaces), :data:`KEYS_READ_IN_CODE` and, for your own model
  (``--model=file.py:Class``), the keys of ``Class.yaml`` beside its file (:func:`model_keys`). A key outside that
  set is an error naming the closest known key. Keys read by your own code are declared with
  ``extra_keys: [name, ...]``.
* **Values.** Types follow the default of the key (a number stays a number, a flag a boolean, a list a list);
  ranged keys are whole numbers or numbers within their bounds: the RecBole-wide keys of :data:`RANGES` here, a
  model's own keys in its class attribute ``config_ranges`` (:func:`ranges_for`; see
  :class:`recbole_ssr.model.abstract.MultimodalRecommender`). A whole number written as a float (``epochs: 1e3``,
  which yaml reads as 1000.0) is taken as that whole number. ``lr_decay`` is ``~`` or ``[decay > 0, step > 0]``;
  ``metrics``, ``topk`` and ``valid_metric`` name metrics RecBole has and agree with each other.
* **Search spaces.** Every value a search can draw is checked against the same ranges before the search starts
  (:func:`check_search_space`).
* **Yaml files.** A key written twice in one mapping is refused (:func:`check_duplicate_keys`): yaml would silently
  keep the last one.
"""

import difflib
import glob
import os
from functools import lru_cache

from recbole_ssr.core.errors import ConfigError
from recbole_ssr.core.paths import properties_dir
from recbole_ssr.core.safe_io import check_writable_folder
from recbole_ssr.model.registry import beside_model, get_model, is_model_spec, resolved_spec_classes

EXTRA_KEYS = "extra_keys"

#: keys read by RecBole's or this plugin's code that no default yaml lists
KEYS_READ_IN_CODE = frozenset({
    EXTRA_KEYS, "model", "model_source", "dataset", "data_format", "dataset_dir", "data_root", "modalities", "feature_item_ids",
    "cold_item_ratio", "cold_item_seed", "tail_ratio", "device", "local_rank", "world_size", "single_spec",
    "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_neg_sample_args", "test_neg_sample_args",
    "valid_metric_bigger", "token_num_threshold", "xgb_early_stopping_rounds",
})

#: RecBole-wide keys (every model reads them) and the common keys of RecBole's own models (whose classes cannot
#: declare ranges): key -> (kind, lowest, highest[, bounds]); see :func:`check_range` for the notation. A plugin
#: model declares the ranges of its own keys in its class attribute ``config_ranges`` (:func:`ranges_for`).
RANGES = {
    "epochs": ("int", 1, None),
    "train_batch_size": ("int", 1, None),
    "eval_batch_size": ("int", 1, None),
    "stopping_step": ("int", 0, None),
    "eval_step": ("int", 0, None),
    "seed": ("int", 0, 2 ** 32 - 1),
    "worker": ("int", 0, None),
    "learning_rate": ("float", 0.0, None),
    "weight_decay": ("float", 0.0, None),
    "cold_item_ratio": ("float", 0.0, 1.0),
    "progress_interval": ("float", 0.0, None),
    # common keys of RecBole's own models (and of several plugin models)
    "embedding_size": ("int", 1, None),
    "hidden_size": ("int", 1, None),
    "n_layers": ("int", 0, None),
    "num_layers": ("int", 0, None),
    "dropout": ("float", 0.0, 1.0),
    "dropout_prob": ("float", 0.0, 1.0),
    "tau": ("float", 0.0, None, "()"),
    "temperature": ("float", 0.0, None, "()"),
    "ssl_temp": ("float", 0.0, None, "()"),
}
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


def model_keys(model_class):
    """The keys of your own model: those of ``Class.yaml`` beside its file (empty for the shipped models, whose
    yaml files are among :func:`known_keys`)."""
    path = beside_model(model_class, ".yaml") if model_class is not None else None
    return frozenset(_yaml_keys(path)) if path and os.path.isfile(path) else frozenset()


def declare_model_keys(models, overrides):
    """``overrides`` of a command that runs several ``models`` (names or specs): a key of your own model's
    ``Class.yaml`` set on the command line is declared (``extra_keys``) for every run, so the other models accept it
    as every model accepts a shipped model's keys (resolves the models' classes)."""
    own = frozenset().union(*(model_keys(get_model(m)) for m in models if is_model_spec(m)))
    declared = [k for k in overrides if k in own and k not in known_keys()]
    if len(models) < 2 or not declared:
        return overrides
    extra = overrides.get(EXTRA_KEYS) or []
    extra = [extra] if isinstance(extra, str) else list(extra)
    return dict(overrides, **{EXTRA_KEYS: extra + [k for k in declared if k not in extra]})


def closest_key(key, also=()):
    match = difflib.get_close_matches(key, known_keys() | frozenset(also), n=1, cutoff=0.6)
    return match[0] if match else None


def check_known_keys(given, sources, model_class=None):
    """``given``: the keys the user set; ``sources``: key -> where it was set (a file or 'the command line');
    ``model_class``: the model of the run (its own keys are known, :func:`model_keys`)."""
    extra = given.get(EXTRA_KEYS) or []
    if isinstance(extra, str):
        extra = [extra]
    if not isinstance(extra, (list, tuple)):
        raise ConfigError(f"{EXTRA_KEYS} must be a list of key names (e.g. extra_keys: [my_key]), got {extra!r}.")
    own = model_keys(model_class)
    allowed = known_keys() | own | {str(k) for k in extra}
    for key in given:
        if key in allowed:
            continue
        guess = closest_key(key, own.union(*(model_keys(c) for c in resolved_spec_classes())))
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


def ranges_for(model_class=None):
    """The ranges that apply to a run of ``model_class``: :data:`RANGES`, then every ``config_ranges`` along the
    class's bases (a subclass's entry wins)."""
    ranges = dict(RANGES)
    for klass in reversed(getattr(model_class, "__mro__", ())):
        ranges.update(vars(klass).get("config_ranges", {}))
    return ranges


def _bounds_text(kind, low, high, bounds):
    word = _WORDS[kind]
    if low is not None and high is not None:
        if bounds == "[]":
            return f"{word} between {low} and {high}"
        return f"{word} {'>' if bounds[0] == '(' else '>='} {low} and {'<' if bounds[1] == ')' else '<='} {high}"
    if low is not None:
        return f"{word} {'>' if bounds[0] == '(' else '>='} {low}"
    if high is not None:
        return f"{word} {'<' if bounds[1] == ')' else '<='} {high}"
    return word


def check_range(key, value, source, spec=None):
    """``value`` of ``key`` against its range ``spec`` = ``(kind, lowest, highest[, bounds])``: ``kind`` "int" (a
    whole number) or "float" (a number), with a trailing "?" when ``~`` (None) is allowed too (and "{}" when the
    model also takes a ``{modality: value}`` mapping, each entry checked here); ``lowest``/``highest``
    None = unbounded; ``bounds`` "[]" (default), "(]", "[)" or "()" = which ends are included. Returns the value,
    a whole number written as a float (``1e3``) as an int; raises :class:`ConfigError` naming ``source``."""
    spec = RANGES[key] if spec is None else spec
    kind, low, high = spec[:3]
    bounds = spec[3] if len(spec) > 3 else "[]"
    optional = kind.endswith("?")
    kind = kind.replace("{}", "").rstrip("?")
    if value is None and optional:
        return value
    if kind == "int" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        expected = _WORDS[kind] + (" or ~ (none)" if optional else "")
        raise _type_error(key, value, expected, source)
    too_low = low is not None and (value <= low if bounds[0] == "(" else value < low)
    too_high = high is not None and (value >= high if bounds[1] == ")" else value > high)
    if too_low or too_high or value != value:
        raise ConfigError(f"{key}={value!r} (from {source}) is out of range: expected "
                          f"{_bounds_text(kind, low, high, bounds)}.")
    return value


def check_types(final, defaults, given, sources, model_class=None):
    """Each key the user set keeps the kind of its default (numbers stay numbers, flags booleans, ...) and stays
    within its range (:func:`ranges_for`); a whole number written as a float is stored as an int in ``final``."""
    ranges = ranges_for(model_class)
    for key in given:
        value, default = final.get(key), defaults.get(key)
        source = sources.get(key, "the configuration")
        if key in ranges and isinstance(value, dict) and (isinstance(default, dict) or "{}" in ranges[key][0]):
            # a per-modality mapping (knn_k: {image: 10, default: 10}): every entry within the key's range
            final[key] = {k: check_range(f"{key}.{k}", v, source, ranges[key]) for k, v in value.items()}
            continue
        if key in ranges and _kind_of(default) in (None, "int", "float"):
            final[key] = check_range(key, value, source, ranges[key])
            continue
        want, got = _kind_of(default), _kind_of(value)
        if default is None or want is None or value is None and want in ("str", "list", "dict"):
            continue
        numbers = ("int", "float")  # whole numbers are enforced by the ranges only: a yaml's 0 may stand for 0.0
        if want == got or (want in numbers and got in numbers) or (key in SCALAR_OR_LIST and got is not None):
            continue
        raise _type_error(key, value, _WORDS["float" if want == "int" else want], source)


def check_lr_decay(final, sources):
    """``lr_decay`` is ``~`` (constant rate) or ``[decay, step]`` with decay > 0 and step > 0 (the trainer multiplies
    the rate by ``decay ** (epoch / step)``)."""
    value = final.get("lr_decay")
    if value is None:
        return
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value))
    if not ok:
        raise ConfigError(f"lr_decay={value!r} (from {sources.get('lr_decay', 'the configuration')}): expected ~ "
                          "(a constant learning rate) or [decay, step] with both > 0, e.g. lr_decay: [0.9, 1] "
                          "(the rate times decay ** (epoch / step)).")


def check_search_space(space, model_class=None):
    """Every value the search ``space`` (:class:`recbole_ssr.config.search_space.SearchSpace`) can give a ranged key lies
    within the key's range (a dotted key ``knn_k.image`` takes the range of ``knn_k``); checked before the search
    starts, so no trial fails on it. The error names the space file and the entry."""
    ranges = ranges_for(model_class)
    source = space.source or "the search space"
    for key, param in space.params.items():
        spec = ranges.get(key.split(".")[0])
        if spec is None:
            continue
        values = param.finite_values()
        if values is None:  # a continuous axis: its two ends
            values = param.args[:2]
        entry = f"search space {source}, '{key}: {{{param.kind}: {param.args}}}'"
        for value in values:
            check_range(key, value, entry, spec)
    for key, value in space.fixed.items():
        spec = ranges.get(key.split(".")[0])
        if spec is not None and not isinstance(value, dict):
            check_range(key, value, f"search space {source}", spec)


def check_duplicate_keys(text, path):
    """A :class:`ConfigError` when a mapping of the yaml ``text`` (the content of ``path``) sets a key twice: yaml
    keeps the last one silently. Malformed yaml is left for the loader to report."""
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    raise ConfigError(f"{path}: key '{key}' is set twice (lines {seen[key]} and "
                                      f"{key_node.start_mark.line + 1}); yaml would silently keep the last one. "
                                      "Keep one of them.")
                if key is not None:
                    seen[key] = key_node.start_mark.line + 1
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


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
    check_known_keys(given, sources, model_class)
    check_types(final, defaults, given, sources, model_class)
    check_lr_decay(final, sources)
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
