"""Search-space files for ``--tune`` (``properties/search/<Model>.yaml``): parsing and validation, without Ray.

A search-space file is a yaml mapping of configuration keys. Each value is either a plain value (fixed for every
trial) or a one-key mapping naming a distribution::

    learning_rate: {loguniform: [1.0e-4, 1.0e-2]}   # log-uniform float in [low, high]
    dropout: {uniform: [0.1, 0.5]}                  # uniform float in [low, high]
    reg_weight: {choice: [0, 1.0e-5, 1.0e-4]}       # one value drawn at random per trial
    n_layers: {grid: [1, 2, 3]}                     # every value (a grid axis; see below)
    knn_k: {randint: [5, 20]}                       # integer in [low, high], both ends included
    mask_rate: {quniform: [0.1, 0.4, 0.1]}          # a multiple of q in [low, high], uniformly
    hyper_num: {quniform: [4, 64, 4]}               #   (integers when low, high and q are all integers)
    knn_k.image: {grid: [10, 20, 40]}               # dotted key: one entry of a mapping value
    embedding_size: 64                              # fixed
    eval_args: {fixed: {mode: full}}                # fixed mapping value ("fixed" is only needed for mappings
                                                    #  of one key whose value is a list)

The reserved key ``search:`` holds the search's own settings (defaults in ``properties/search/defaults.yaml``;
the command line overrides both): ``num_samples``, ``scheduler`` (asha | fifo), ``grace_period``,
``reduction_factor``, ``cpus_per_trial``, ``gpus_per_trial``, ``output``, ``keep_checkpoints``.

Trial count (Ray Tune's rule): every combination of the ``grid`` axes is run ``num_samples`` times, each time with
fresh draws of the random axes; with no ``grid`` axis there are exactly ``num_samples`` trials.
"""

import copy
import math
import numbers
import os

from recbole_ssr.core.errors import ConfigError, yaml_error_text
from recbole_ssr.core.paths import properties_dir

DISTRIBUTIONS = {
    "choice": "a non-empty list of values, one drawn at random per trial",
    "grid": "a non-empty list of values, every one tried",
    "uniform": "[low, high] floats",
    "loguniform": "[low, high] floats, 0 < low",
    "randint": "[low, high] integers, both included",
    "quniform": "[low, high, q] numbers, q > 0",
    "fixed": "any value, used as it is",
}
SETTINGS = {
    "num_samples": "trials per grid point (int >= 1)",
    "scheduler": "asha (early stopping of weak trials) or fifo (every trial runs to its end)",
    "grace_period": "epochs every trial runs before ASHA may stop it (int >= 1)",
    "reduction_factor": "ASHA keeps the best 1/reduction_factor of the trials at each rung (number > 1)",
    "cpus_per_trial": "CPUs reserved per trial (number > 0)",
    "gpus_per_trial": "GPUs reserved per trial, fractions allowed (number >= 0)",
    "output": "folder under which each search writes its own timestamped folder",
    "keep_checkpoints": "keep every trial's model checkpoint (false: only the best trial's)",
    "search_alg": "how trials are drawn: random (grid axes enumerated, other axes sampled) or optuna (Optuna's TPE, "
                  "model-based, through Ray Tune's OptunaSearch)",
    "budget": "exact (num_samples is the whole number of trials, grid axes drawn like choice axes, distinct points of "
              "a finite space: the equal budget of --tune=auto) or per_grid_point (Ray Tune's rule)",
    "seed": "seed of the trial sampler (int)",
}
SEARCH_ALGS = ("random", "optuna")
BUDGETS = ("per_grid_point", "exact")
RESERVED_KEY = "search"


def yaml_loader():
    """RecBole's yaml loader (reads ``1e-4`` as a float, like every other config file of the project)."""
    from recbole.config import Config as RecBoleConfig

    return RecBoleConfig._build_yaml_loader(None)


def read_yaml(path, what="search-space file"):
    import yaml

    from recbole_ssr.config.validation import check_duplicate_keys

    if os.path.isdir(path):
        raise ConfigError(f"{what} '{path}' is a folder, but a yaml file is expected; name the file inside it.")
    if not os.path.isfile(path):
        hint = " Check the path."
        if what == "search-space file":
            try:
                shipped = os.path.join(properties_dir(), "search")
            except ConfigError:
                shipped = "properties/search"
            hint = f" The shipped ones are in {shipped}/ (one per model, e.g. properties/search/VBPR.yaml)."
        raise ConfigError(f"{what} '{path}' does not exist.{hint}")
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    check_duplicate_keys(text, path)
    try:
        loaded = yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid yaml ({yaml_error_text(exc)}). Fix the syntax (one 'key: value' "
                          "or 'key: {grid: [...]}' per line).") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of configuration keys, got {type(loaded).__name__}.")
    return loaded


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Param:
    """One searched key: ``kind`` (a key of :data:`DISTRIBUTIONS`) and its validated ``args``."""

    def __init__(self, key, kind, args, source="search space"):
        self.key, self.kind, self.source = key, kind, source
        self.args = self._validate(args)

    def _fail(self, expected, got):
        raise ConfigError(f"{self.source}: '{self.key}: {{{self.kind}: {got!r}}}' is invalid; {self.kind} "
                          f"expects {expected}.")

    def _validate(self, args):
        kind = self.kind
        if kind == "fixed":
            return args
        expected = DISTRIBUTIONS[kind]
        if not isinstance(args, (list, tuple)):
            self._fail(expected, args)
        args = list(args)
        if kind in ("choice", "grid"):
            if not args:
                self._fail(expected, args)
            return args
        size = 3 if kind == "quniform" else 2
        if len(args) != size or not all(_is_number(a) for a in args):
            self._fail(expected, args)
        low, high = args[0], args[1]
        if not low < high:
            self._fail(expected + ", low < high", args)
        if kind == "loguniform" and low <= 0:
            self._fail(expected, args)
        if kind == "randint" and not (_is_int(low) and _is_int(high)):
            self._fail(expected, args)
        if kind == "quniform":
            if args[2] <= 0:
                self._fail(expected, args)
            if math.floor(high / args[2] + 1e-9) < math.ceil(low / args[2] - 1e-9):
                self._fail(expected + ", with at least one multiple of q in [low, high]", args)
        return args

    @property
    def integer(self):
        """quniform over integers yields integers (e.g. a neighbour count)."""
        return self.kind == "quniform" and all(_is_int(a) for a in self.args)

    def to_ray(self):
        from ray import tune

        kind, args = self.kind, self.args
        if kind == "fixed":
            return copy.deepcopy(args)
        if kind == "choice":
            return tune.choice(copy.deepcopy(args))
        if kind == "grid":
            return tune.grid_search(copy.deepcopy(args))
        if kind == "uniform":
            return tune.uniform(float(args[0]), float(args[1]))
        if kind == "loguniform":
            return tune.loguniform(float(args[0]), float(args[1]))
        if kind == "randint":
            return tune.randint(args[0], args[1] + 1)  # Ray's upper bound is exclusive; ours is inclusive
        values = self.quantized_values()
        if values is not None:
            return tune.choice(values)  # exact multiples of q (Ray's quniform gives 0.30000000000000004)
        return tune.quniform(float(args[0]), float(args[1]), float(args[2]))

    def quantized_values(self, limit=10000):
        """quniform: every multiple of q in [low, high] (ints for integer arguments); None when more than
        ``limit`` (then Ray's own quniform samples the range)."""
        low, high, q = self.args
        first, last = math.ceil(low / q - 1e-9), math.floor(high / q + 1e-9)
        if last - first + 1 > limit:
            return None
        if self.integer:
            return [int(k * q) for k in range(first, last + 1)]
        return [float(f"{k * q:.12g}") for k in range(first, last + 1)]

    def finite_values(self):
        """Every value this parameter can take when there are finitely many (choice, grid, randint, quniform of
        at most 10,000 values), else None."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return list(range(self.args[0], self.args[1] + 1))
        if self.kind == "quniform":
            return self.quantized_values()
        return None

    def as_choice(self):
        """A grid axis as a choice axis over the same values (the exact-budget mode samples grid axes)."""
        return Param(self.key, "choice", self.args, self.source) if self.kind == "grid" else self

    def describe(self):
        return f"{self.kind} {self.args!r}"

    def contains(self, value):
        """Whether ``value`` is a value this parameter can take (used by tests and by resume checks)."""
        kind, args = self.kind, self.args
        if kind == "fixed":
            return value == args
        if kind in ("choice", "grid"):
            return value in args
        low, high = args[0], args[1]
        if not _is_number(value) or not low - 1e-12 <= value <= high + 1e-12:
            return False
        if kind == "randint":
            return _is_int(value)
        if kind == "quniform":
            steps = value / args[2]
            return abs(steps - round(steps)) < 1e-6 and (not self.integer or _is_int(value))
        return True


class SearchSpace:
    """A parsed search-space file: ``params`` (searched keys), ``fixed`` (plain values), ``settings``."""

    def __init__(self, params, fixed, settings, source=None):
        self.params, self.fixed, self.settings, self.source = params, fixed, settings, source

    @property
    def grid_points(self):
        points = 1
        for param in self.params.values():
            if param.kind == "grid":
                points *= len(param.args)
        return points

    def n_trials(self, num_samples):
        return self.grid_points * int(num_samples)

    def to_ray(self):
        """Ray Tune ``param_space``: only the searched keys (fixed ones travel in the trials' base config)."""
        return {key: param.to_ray() for key, param in self.params.items()}

    def without_grid(self):
        """The same space with every grid axis turned into a choice axis over the same values."""
        return SearchSpace({k: p.as_choice() for k, p in self.params.items()}, self.fixed, self.settings, self.source)

    def finite_size(self):
        """Number of distinct points when every axis is finite, else None."""
        size = 1
        for param in self.params.values():
            values = param.finite_values()
            if values is None:
                return None
            size *= len(values)
        return size

    def distinct_points(self, count, seed=0):
        """``count`` distinct points drawn uniformly at random (seeded) from a finite space, in draw order; all
        of them when the space has fewer. Raises ValueError for a space with a continuous axis."""
        import random

        axes = [(key, param.finite_values()) for key, param in self.params.items()]
        if any(values is None for _, values in axes):
            raise ValueError("distinct_points needs a finite space")
        size = self.finite_size()
        picks = random.Random(seed).sample(range(size), min(count, size))
        points = []
        for index in picks:  # mixed-radix decoding of a point's index, first axis fastest
            point = {}
            for key, values in axes:
                index, digit = divmod(index, len(values))
                point[key] = copy.deepcopy(values[digit])
            points.append(point)
        return points

    def check_searcher(self, search_alg):
        """A clear error for an axis the searcher cannot express (Optuna has no grid axis)."""
        if search_alg == "optuna":
            grids = [key for key, param in self.params.items() if param.kind == "grid"]
            if grids:
                raise ConfigError(
                    f"{self.source}: search_alg optuna (TPE) draws every trial from a model of the results so far and "
                    f"cannot enumerate a grid axis ({', '.join(grids)}). Write 'choice' instead of 'grid' for "
                    "them, or use search_alg: random (budget: exact turns grid axes into choice axes by itself).")

    def describe(self):
        lines = [f"  {key}: {param.describe()}" for key, param in self.params.items()]
        lines += [f"  {key}: {value!r} (fixed)" for key, value in self.fixed.items()]
        return "\n".join(lines)


def setting_error(key, value, source):
    """None when ``value`` is a valid value of the search setting ``key``, else the :class:`ConfigError` to raise."""
    if value is None or _SETTING_CHECKS[key](value):
        return None
    return ConfigError(f"{source}: search setting '{key}: {value!r}' is invalid; expected {SETTINGS[key]}.")


_SETTING_CHECKS = {
    "num_samples": lambda v: _is_int(v) and v >= 1,
    "scheduler": lambda v: v in ("asha", "fifo"),
    "grace_period": lambda v: _is_int(v) and v >= 1,
    "reduction_factor": lambda v: _is_number(v) and v > 1,
    "cpus_per_trial": lambda v: _is_number(v) and v > 0,
    "gpus_per_trial": lambda v: _is_number(v) and v >= 0,
    "output": lambda v: isinstance(v, str) and v,
    "keep_checkpoints": lambda v: isinstance(v, bool),
    "search_alg": lambda v: v in SEARCH_ALGS,
    "budget": lambda v: v in BUDGETS,
    "seed": _is_int,
}


def _check_settings(settings, source):
    if not isinstance(settings, dict):
        raise ConfigError(f"{source}: '{RESERVED_KEY}:' must be a mapping of search settings "
                          f"({', '.join(SETTINGS)}).")
    for key, value in settings.items():
        if key not in SETTINGS:
            raise ConfigError(f"{source}: unknown search setting '{RESERVED_KEY}.{key}'. Known settings: "
                              + "; ".join(f"{k} ({v})" for k, v in SETTINGS.items()) + ".")
    for key, value in settings.items():
        error = setting_error(key, value, source)
        if error is not None:
            raise error
    return settings


def parse_search_space(mapping, source="search space"):
    """Validate a loaded search-space mapping; returns a :class:`SearchSpace` (raises ``ConfigError``)."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of configuration keys, got {type(mapping).__name__}.")
    params, fixed, settings = {}, {}, {}
    for key, value in mapping.items():
        if key == RESERVED_KEY:
            settings = dict(_check_settings(value or {}, source))
            continue
        if isinstance(value, dict) and len(value) == 1:
            (name, args), = value.items()
            if name in DISTRIBUTIONS:
                if name == "fixed":
                    fixed[key] = args
                else:
                    params[key] = Param(key, name, args, source)
                continue
            if isinstance(args, (list, tuple)):
                raise ConfigError(
                    f"{source}: '{key}: {{{name}: ...}}' uses an unknown distribution '{name}'. Known: "
                    + "; ".join(f"{k} ({v})" for k, v in DISTRIBUTIONS.items())
                    + f". To fix a mapping value as it is, write '{key}: {{fixed: {{{name}: ...}}}}'."
                )
        fixed[key] = value
    return SearchSpace(params, fixed, settings, source)


def default_settings():
    """``properties/search/defaults.yaml`` (the search settings used when a file or the command line gives none)."""
    path = os.path.join(properties_dir(), "search", "defaults.yaml")
    loaded = read_yaml(path, "search defaults file") if os.path.isfile(path) else {}
    return dict(_check_settings(loaded.get(RESERVED_KEY, loaded) or {}, path))


def load_search_space(path):
    """Read and validate a search-space file."""
    path = os.path.abspath(path)
    return parse_search_space(read_yaml(path), source=path)


def apply_params(config_dict, params):
    """``config_dict`` updated with sampled ``params``; a dotted key (``knn_k.image``) sets one entry of a mapping
    value (``knn_k: {image: .., text: .., default: ..}``), whose other entries come from ``config_dict``."""
    merged = copy.deepcopy(dict(config_dict))
    for key, value in params.items():
        if "." not in key:
            merged[key] = value
            continue
        parts = key.split(".")
        node = merged
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"search key '{key}': '{'.'.join(parts[:depth + 1])}' is {child!r}, not a mapping, "
                                  "so it has no entry to set; search the whole key instead.")
            node = child
        node[parts[-1]] = value
    return merged


def inline_config_files(paths):
    """The merged content of yaml config files (later files win), so that a run on another Ray node gets them as
    a mapping instead of paths that exist only on the driver."""
    merged = {}
    for path in paths or []:
        merged.update(read_yaml(path, what="config file"))
    return merged


def dotted_roots(keys):
    """Configuration keys whose mapping value a dotted search key changes (``knn_k.image`` -> ``knn_k``)."""
    return sorted({key.split(".", 1)[0] for key in keys if "." in key})
