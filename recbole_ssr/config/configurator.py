"""Configuration: RecBole's ``Config`` extended with the plugin's yaml files and evaluation protocols.

Priority, lowest to highest (each level overrides the ones before it):

1. RecBole's internal defaults (its ``overall.yaml``, its model/dataset yaml when it has one);
2. the evaluation protocol's defaults, ``properties/protocol/<eval_protocol>.yaml``;
3. ``properties/overall.yaml``;
4. ``properties/dataset/<dataset>.yaml``;
5. ``properties/model/<Model>.yaml`` (your own model, ``--model=file.py:Class``: ``Class.yaml`` beside its file);
6. ``config_file_list`` (``--config_files``), in order;
7. ``config_dict`` (the runner passes the command line's ``--key=value`` here).

Every key the user sets is checked before any data is loaded (:mod:`recbole_ssr.config.validation`): an unknown key, a
value of the wrong type or out of range, or a metric RecBole does not compute is a :class:`ConfigError`.

RecBole's own parsing of ``sys.argv`` is switched off: the runner owns the command line, and a library call
(tests, Ray workers) must not pick up the arguments of whatever process it runs in.
"""

import contextlib
import os

from recbole.config import Config as RecBoleConfig

from recbole_ssr.config.validation import check_duplicate_keys, validate
from recbole_ssr.core.errors import ConfigError, yaml_error_text
from recbole_ssr.core.paths import properties_dir
from recbole_ssr.data.source import locate
from recbole_ssr.model.registry import beside_model, get_model, model_source

EVAL_PROTOCOLS = ("mmrec", "recbole")
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@contextlib.contextmanager
def visible_devices_unchanged():
    """Keep ``CUDA_VISIBLE_DEVICES`` as it was around a Config that only checks settings in a driver process.

    RecBole's Config writes ``gpu_id`` (default '0') into ``CUDA_VISIBLE_DEVICES``, which is how one run picks its
    GPU. In a process that starts Ray afterwards (a search, a benchmark) that would hide the machine's other GPUs
    from Ray (it counts only the visible ones), or all of them with ``gpu_id: ''``; Ray assigns each trial/run
    its own GPUs instead."""
    saved = os.environ.get(VISIBLE_DEVICES)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(VISIBLE_DEVICES, None)
        else:
            os.environ[VISIBLE_DEVICES] = saved


class Config(RecBoleConfig):
    """RecBole ``Config`` that also loads ``properties/`` of this plugin (see the module docstring for the order)."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        for path in config_file_list or []:
            if os.path.isdir(path):
                raise ConfigError(f"config file '{path}' (from --config_files) is a folder, but a yaml file is "
                                  "expected; name the file inside it.")
            if not os.path.isfile(path):
                raise ConfigError(f"config file '{path}' (from --config_files) does not exist.")
        super().__init__(model, dataset, config_file_list, config_dict)

    def _load_cmd_line(self):
        return {}

    def _load_config_files(self, file_list):
        """RecBole's loading of ``--config_files``, with one clear error for a malformed file or one that is not a
        mapping, and a note of which file set each key (for the messages of :mod:`recbole_ssr.config.validation`)."""
        import yaml

        merged, self.key_sources = {}, {}
        for path in file_list or []:
            try:
                with open(path, "r", encoding="utf-8") as handle:
                    text = handle.read()
                check_duplicate_keys(text, f"config file {path} (from --config_files)")
                loaded = yaml.load(text, Loader=self.yaml_loader)
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {path} (from --config_files) is not valid YAML "
                                  f"({yaml_error_text(exc)}). Fix the syntax (one 'key: value' per line).") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"config file {path} (from --config_files) cannot be read ({exc}).") from None
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {path} (from --config_files) holds a {type(loaded).__name__}, but a "
                                  "mapping of 'key: value' lines is expected (e.g. 'learning_rate: 0.001').")
            merged.update(loaded)
            self.key_sources.update({key: path for key in loaded})
        return merged

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        sources = dict(getattr(self, "key_sources", {}))
        for key in self.variable_config_dict:
            sources[key] = "the command line"
        validate(final, self.internal_config_dict, self.external_config_dict, sources, self.model_class)
        return final

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError("no model given: pass --model=NAME (e.g. --model=SSR).")
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError("no dataset given: pass --dataset=NAME (e.g. --dataset=baby).")
        model_class = get_model(model)
        # your own model (file.py:Class, package.module:Class, a class): config["model"] is its class name and
        # config["model_source"] the spec every other process resolves it from (None for shipped models)
        self.model_source = model_source(model_class)
        name = model if isinstance(model, str) and self.model_source is None else model_class.__name__
        return name, model_class, dataset

    def __getstate__(self):
        """Pickled (a checkpoint's configuration) with the model as its name or spec, not as a class: a process
        that loads it resolves the class again (:func:`recbole_ssr.model.registry.get_model`); when that fails (a
        model file no longer there) ``model_class`` is None and building the model names the missing file."""
        return dict(self.__dict__, model_class=None)

    def __setstate__(self, state):
        self.__dict__.update(state)
        try:
            self.model_class = get_model(state.get("model_source") or self.model)
        except ConfigError:
            self.model_class = None

    def _plugin_yaml(self, *parts):
        return self._yaml_mapping(os.path.join(properties_dir(), *parts))

    def _yaml_mapping(self, path):
        if not path or not os.path.isfile(path):
            return {}
        import yaml

        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
        check_duplicate_keys(text, path)
        try:
            loaded = yaml.load(text, Loader=self.yaml_loader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML ({yaml_error_text(exc)}). Fix the syntax (one 'key: value' "
                              "per line).") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value, got {type(loaded).__name__}.")
        return loaded or {}

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        plugin = {}
        for parts in (("overall.yaml",), ("dataset", f"{dataset}.yaml"), ("model", f"{model}.yaml")):
            own_file = beside_model(model_class, ".yaml")
            loaded = self._yaml_mapping(own_file) if parts[0] == "model" and own_file else self._plugin_yaml(*parts)
            if parts[0] == "dataset":
                self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]
            plugin.update(loaded)

        protocol = self.external_config_dict.get("eval_protocol", plugin.get("eval_protocol"))
        if protocol is None:  # from the dataset's layout; the located source is kept for prepare_source
            data_root = self.external_config_dict.get("data_path", plugin.get("data_path", "dataset/"))
            self.data_source = locate(os.path.join(data_root, dataset), dataset, plugin.get("data_format"))
            protocol = "mmrec" if self.data_source.layout == "mmrec" else "recbole"
        if protocol not in EVAL_PROTOCOLS:
            raise ConfigError(f"eval_protocol '{protocol}' is unknown: use one of {', '.join(EVAL_PROTOCOLS)}.")
        self.internal_config_dict.update(self._plugin_yaml("protocol", f"{protocol}.yaml"))
        self.internal_config_dict.update(plugin)
        self.internal_config_dict["eval_protocol"] = protocol

    def _set_default_parameters(self):
        data_root = self.final_config_dict.get("data_path") or "dataset/"
        super()._set_default_parameters()
        self.final_config_dict["model_source"] = self.model_source  # what resolves the model in another process
        # RecBole points ml-100k at the copy inside its wheel; the plugin keeps one rule for every dataset:
        # <data_path>/<dataset>, made absolute (Ray trials change the working directory).
        self.final_config_dict["data_root"] = os.path.abspath(data_root)
        self.final_config_dict["data_path"] = os.path.join(os.path.abspath(data_root), self.dataset)
        for key in ("checkpoint_dir", "cache_dir"):
            if self.final_config_dict.get(key):
                self.final_config_dict[key] = os.path.abspath(self.final_config_dict[key])
        if self.final_config_dict.get("eval_protocol") == "mmrec":
            mode = self.final_config_dict["eval_args"].get("mode")
            modes = set(mode.values()) if isinstance(mode, dict) else {mode}
            if modes != {"full"}:
                raise ConfigError(
                    f"eval_protocol 'mmrec' ranks every item (full sort), but eval_args.mode is {mode}. "
                    "Use eval_args: {mode: full}, or eval_protocol: recbole for sampled evaluation."
                )
