"""Hyper-parameter search on Ray Tune: ``run_recbole_ssr.py --model=M --dataset=D --tune=SPACE.yaml``.

How a search runs (see docs/tuning.md for the user's view):

1. The driver reads the search-space file (:mod:`recbole_ssr.search_space`), resolves the configuration once and
   prepares the dataset once (MMRec conversion / embedded-dataset build into the shared ``cache_dir``), so bad
   input fails before Ray starts and trials only load the cached files (measured on TikTok: loading the cache
   takes 0.25-0.5 s per trial, shipping a pickled dataset through the object store 0.1-0.2 s, both negligible
   next to training; the cache also stays correct when a searched key changes the dataset, so it is used).
2. Ray is started locally (``--num_cpus``; usage stats and dashboard off) or joined (``--address``). Every trial
   is a function trainable in this module, so importing it in a worker applies the compat fixes; it runs
   :func:`recbole_ssr.quick_start.run` in its own trial folder with its own ``checkpoint_dir``, absolute data
   and cache paths, ``cpus_per_trial`` torch threads and the GPUs Ray gave it (fractions allowed).
3. After every evaluation a trial reports its validation result (this epoch's and the best so far); ASHA
   (default; ``--scheduler=fifo`` turns it off) stops weak trials early on the best-so-far valid metric.
   A trial that ends on its own (early stopping / ``epochs``) evaluates its best-valid checkpoint on the test
   set and reports it. A trial stopped by ASHA never looks at the test set; if it turns out to be the best
   trial, its best-valid checkpoint (kept in its folder) is evaluated on the test set after the search.
4. Selection uses the validation metric only (``valid_metric``, best epoch of each trial; ties: the earlier
   trial). The search folder gets ``trials.csv`` (every trial), ``best.yaml`` (usable with ``--config_files``),
   ``best.json`` (also written to ``--results``) and ``search.json`` (what is needed to resume).

Resilience: a crashing trial is recorded as failed and the search goes on; an interrupted search (Ctrl-C, a
killed driver) resumes with ``--resume`` (finished and failed trials are kept, unfinished ones restart from
scratch); every search writes to a new timestamped folder.
"""

import contextlib
import csv
import datetime
import glob
import json
import logging
import math
import os
import shutil
import sys

from recbole_ssr import compat

compat.apply()

from recbole_ssr.errors import ConfigError, RecboleSSRError  # noqa: E402
from recbole_ssr.search_space import (  # noqa: E402
    apply_params, default_settings, dotted_roots, inline_config_files, load_search_space, parse_search_space,
    read_yaml)

MANIFEST = "search.json"
RAY_DIR = "ray"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
BEST_JSON = "best.json"
CHECKPOINTS = "checkpoints"
# keys a trial sets for itself: never part of best.yaml
TRIAL_KEYS = ("checkpoint_dir", "gpu_id", "show_progress")
STATUSES = ("completed", "stopped", "failed", "unfinished")


def _say(message):
    print(message, flush=True)


def _builtin(value):
    """numpy scalars (Ray's samples) and tuples -> plain Python for yaml/json."""
    if isinstance(value, dict):
        return {str(k): _builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_builtin(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _write_json(path, payload):
    from recbole_ssr.quick_start import write_json

    write_json(path, _builtin(payload))


def _read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------------------------
# Settings and the search folder
# --------------------------------------------------------------------------------------------------------------

def resolve_settings(space, args, forced=None):
    """defaults.yaml < the file's ``search:`` section < command-line flags < ``forced`` (the tuned benchmark's
    settings, the same for every model)."""
    settings = default_settings()
    settings.update({k: v for k, v in space.settings.items() if v is not None})
    for key in ("num_samples", "scheduler", "cpus_per_trial", "gpus_per_trial", "output", "search_alg", "grace_period",
                "reduction_factor"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings.setdefault("num_samples", 1)
    settings.setdefault("scheduler", "asha")
    settings.setdefault("grace_period", 10)
    settings.setdefault("reduction_factor", 2)
    settings.setdefault("cpus_per_trial", 1)
    settings.setdefault("gpus_per_trial", 0)
    settings.setdefault("output", "tune_results")
    settings.setdefault("keep_checkpoints", False)
    settings.setdefault("search_alg", "random")
    settings.setdefault("budget", "per_grid_point")
    settings.setdefault("seed", 0)
    settings.update(forced or {})
    if settings["num_samples"] < 1:
        raise ConfigError(f"--num_samples must be >= 1 (got {settings['num_samples']}).")
    if settings["cpus_per_trial"] <= 0 or settings["gpus_per_trial"] < 0:
        raise ConfigError("--cpus_per_trial must be > 0 and --gpus_per_trial >= 0 (fractions allowed, e.g. 0.5).")
    settings["output"] = os.path.abspath(settings["output"])
    return settings


def new_search_folder(root, model, dataset):
    """``<root>/<model>-<dataset>-<YYYYmmdd-HHMMSS>[-n]``: created, never reused."""
    os.makedirs(root, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{model}-{dataset}-{stamp}")
    for n in range(1, 1000):
        folder = base if n == 1 else f"{base}-{n}"
        try:
            os.makedirs(folder)
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a new search folder under {root}.")


def find_resumable(root, model, dataset):
    """The latest search of ``model`` on ``dataset`` under ``root`` that did not finish, or None."""
    candidates = []
    for manifest in glob.glob(os.path.join(root, "*", MANIFEST)):
        try:
            info = _read_json(manifest)
        except (OSError, ValueError):
            continue
        if info.get("model") == model and info.get("dataset") == dataset and info.get("status") != "done":
            candidates.append((info.get("created", ""), os.path.dirname(manifest)))
    return max(candidates)[1] if candidates else None


# --------------------------------------------------------------------------------------------------------------
# Ray session
# --------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def ray_session(address=None, num_cpus=None):
    """Start a local Ray (usage stats and dashboard off) or join ``address``; shut it down afterwards.

    ``RAY_USAGE_STATS_ENABLED=0`` is set only while the local Ray runs (and only if the user did not set it);
    the started Ray processes inherit it. Ray's own ``ray.init`` sets ``RAY_AUTH_MODE=token`` in this process
    for a new local cluster; both variables are restored afterwards. An already initialised Ray (a notebook, the
    tests) is used as it is and left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    saved = {name: os.environ.get(name) for name in ("RAY_USAGE_STATS_ENABLED", "RAY_AUTH_MODE")}
    try:
        if address:
            if num_cpus is not None:
                raise ConfigError("--num_cpus sizes the local Ray only; with --address the cluster's own CPUs are "
                                  "used.")
            kwargs = {} if str(address).startswith("ray://") else {"log_to_driver": False}
            try:
                ray.init(address=address, **kwargs)
            except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError, ...
                raise ConfigError(
                    f"cannot connect to the Ray cluster at --address={address} ({exc}). Start one with "
                    "'ray start --head' (docs/tuning.md), or leave --address out for a local Ray. A cluster with "
                    "token authentication (the default of 'ray start') needs RAY_AUTH_MODE=token and its token "
                    "(~/.ray/auth_token or RAY_AUTH_TOKEN) unless you use --address=auto on the head node."
                ) from None
        else:
            if saved["RAY_USAGE_STATS_ENABLED"] is None:
                os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_resources(settings):
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if settings["cpus_per_trial"] > cpus:
        raise ConfigError(f"--cpus_per_trial={settings['cpus_per_trial']} but Ray has {cpus:g} CPUs; lower it or "
                          "raise --num_cpus.")
    if settings["gpus_per_trial"] > gpus:
        raise ConfigError(f"--gpus_per_trial={settings['gpus_per_trial']} but Ray sees {gpus:g} GPUs; use 0 for "
                          "CPU trials, or run on a machine/cluster with GPUs.")


# --------------------------------------------------------------------------------------------------------------
# The trial (runs inside a Ray worker)
# --------------------------------------------------------------------------------------------------------------

class BestTracker:
    """The best-so-far validation result of a trial, by the trainer's own rule (strict or ``>=``)."""

    def __init__(self, bigger=True, strict=True):
        self.bigger, self.strict = bigger, strict
        self.score, self.result, self.epoch = None, None, None

    def update(self, epoch, score, result):
        score = float(score)
        if self.score is None:
            better = True
        elif self.bigger:
            better = score > self.score if self.strict else score >= self.score
        else:
            better = score < self.score if self.strict else score <= self.score
        if better:
            self.score, self.result, self.epoch = score, _builtin(dict(result)), int(epoch)
        return better


def trial_config_dict(base, params, trial_dir):
    """The config_dict of one trial: base (fixed keys, overrides, absolute paths) + sampled params + own dirs."""
    import ray

    config_dict = apply_params(base["config_dict"], _builtin(params))
    config_dict["checkpoint_dir"] = os.path.join(trial_dir, CHECKPOINTS)
    config_dict["show_progress"] = False
    try:
        gpu_ids = ray.get_gpu_ids()
    except Exception:  # outside a Ray worker
        gpu_ids = []
    # RecBole writes gpu_id into CUDA_VISIBLE_DEVICES: keep Ray's assignment, and no GPU for CPU trials.
    config_dict["gpu_id"] = ",".join(str(g) for g in gpu_ids)
    return config_dict


def _set_threads(cpus):
    import torch

    torch.set_num_threads(max(1, int(math.floor(cpus))))


def _node_id():
    """The Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


def trial_main(params, base):
    """Ray Tune function trainable: one training run, reporting valid after every evaluation."""
    from ray import tune

    from recbole_ssr.quick_start import run

    # Our own folder per trial (checkpoints, RecBole's log/, outcome.json), under the search folder rather than
    # Ray's per-session working directory, so it outlives the Ray session and sits on the same (shared) storage.
    trial_dir = os.path.join(base["trials_dir"], tune.get_context().get_trial_id())
    shutil.rmtree(os.path.join(trial_dir, CHECKPOINTS), ignore_errors=True)  # a restarted trial starts afresh
    os.makedirs(trial_dir, exist_ok=True)
    os.chdir(trial_dir)
    _set_threads(base["cpus_per_trial"])
    config_dict = trial_config_dict(base, params, trial_dir)
    strict = bool(config_dict.get("early_stop_strict", base["early_stop_strict"]))
    tracker = BestTracker(bigger=base["bigger"], strict=strict)

    node_id = _node_id()

    def report(epoch, valid_score, valid_result):
        tracker.update(epoch, valid_score, valid_result)
        tune.report({
            "node_id": node_id,
            "epoch": int(epoch) + 1,
            "valid_score": float(valid_score),
            "best_valid_score": tracker.score,
            "best_epoch": tracker.epoch,
            "valid": _builtin(dict(valid_result)),
            "best_valid": tracker.result,
            "finished": False,
        })

    outcome = run(base["model"], base["dataset"], base["config_files"], config_dict, saved=True,
                  callback_fn=report)
    _write_json(os.path.join(trial_dir, "outcome.json"), outcome)
    tune.report({
        "node_id": node_id,
        "epoch": int(outcome["epochs_run"] or 0),
        "best_valid_score": outcome["best_valid_score"],
        "best_epoch": outcome["best_epoch"],
        "best_valid": outcome["best_valid_result"],
        "test": outcome["test_result"],
        "seconds_per_epoch": outcome["seconds_per_epoch"],
        "n_params": outcome["n_params"],
        "finished": True,
    })


def evaluate_checkpoint(model, dataset, config_file_list, config_dict, checkpoint):
    """Valid and test results of a saved checkpoint (a trial's best-valid model), without training."""
    from recbole.utils import init_seed

    from recbole_ssr.quick_start import _plain, prepare
    from recbole_ssr.utils import get_model, get_trainer

    config, _, (train_data, valid_data, test_data) = prepare(model, dataset, config_file_list, config_dict)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    valid = trainer.evaluate(valid_data, load_best_model=True, model_file=checkpoint)
    test = trainer.evaluate(test_data, load_best_model=True, model_file=checkpoint)
    return {"valid": _plain(dict(valid or {})), "test": _plain(dict(test or {}))}


def _evaluate_checkpoint_task(base, params, trial_dir, checkpoint):
    _set_threads(base["cpus_per_trial"])
    previous = os.getcwd()
    os.chdir(trial_dir)  # RecBole's log/ folders go to the trial, not the worker's cwd
    try:
        return evaluate_checkpoint(base["model"], base["dataset"], base["config_files"],
                                   trial_config_dict(base, params, trial_dir), checkpoint)
    finally:
        os.chdir(previous)


def trial_dirname(trial):
    return f"trial_{trial.trial_id}"


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------

def _last_line(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def _error_file(trial):
    for folder in (trial.path, trial.local_path):
        if folder and os.path.isfile(os.path.join(folder, "error.txt")):
            return os.path.join(folder, "error.txt")
    return None


def trial_record(trial, searched, trials_dir):
    """One trial as a plain dict (status: completed | stopped | failed | unfinished)."""
    last = trial.last_result or {}
    finished = bool(last.get("finished"))
    if trial.status == "ERROR":
        status = "failed"
    elif trial.status == "TERMINATED":
        status = "completed" if finished else "stopped"
    else:
        status = "unfinished"
    trial_dir = os.path.join(trials_dir, trial.trial_id)
    error, error_file = "", _error_file(trial)
    if status == "failed":
        error = _last_line(error_file) if error_file else "failed (no error file)"
    checkpoints = sorted(glob.glob(os.path.join(trial_dir, CHECKPOINTS, "*.pth")))
    score = last.get("best_valid_score")
    return {
        "trial_id": trial.trial_id,
        "status": status,
        "params": _builtin({k: trial.config.get(k) for k in searched}),
        "valid_score": float(score) if score is not None and status != "failed" else None,
        "valid": _builtin(last.get("best_valid") or {}),
        "test": _builtin(last.get("test") or {}) if finished else {},
        "test_source": "trial" if finished else None,
        "best_epoch": last.get("best_epoch"),
        "epochs": last.get("epoch"),
        "seconds_per_epoch": last.get("seconds_per_epoch"),
        "seconds": round(float(last["time_total_s"]), 2) if last.get("time_total_s") is not None else None,
        "error": error,
        "error_file": error_file,
        "trial_dir": trial_dir,
        "checkpoint": checkpoints[-1] if checkpoints else None,
        "node_id": last.get("node_id"),
    }


def select_best(records, bigger=True):
    """The trial with the best validation score (completed or stopped early; ties: the earlier trial)."""
    best = None
    for record in records:
        score = record["valid_score"]
        if record["status"] not in ("completed", "stopped") or score is None or math.isnan(score):
            continue
        if best is None or (score > best["valid_score"] if bigger else score < best["valid_score"]):
            best = record
    return best


def write_trials_csv(path, records, searched):
    metrics = []
    for record in records:
        for part in ("valid", "test"):
            for name in record[part]:
                if name not in metrics:
                    metrics.append(name)
    columns = (["trial_id", "status"] + [f"config/{k}" for k in searched]
               + [f"valid/{m}" for m in metrics] + [f"test/{m}" for m in metrics]
               + ["best_epoch", "epochs", "seconds", "seconds_per_epoch", "error", "trial_dir"])
    from recbole_ssr.safe_io import atomic_write

    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in records:
            row = [r["trial_id"], r["status"]]
            row += [json.dumps(r["params"].get(k)) if isinstance(r["params"].get(k), (list, dict))
                    else r["params"].get(k) for k in searched]
            row += [r["valid"].get(m, "") for m in metrics] + [r["test"].get(m, "") for m in metrics]
            row += [r["best_epoch"], r["epochs"], r["seconds"], r["seconds_per_epoch"], r["error"], r["trial_dir"]]
            writer.writerow(["" if v is None else v for v in row])


def best_config(manifest, params):
    """The configuration a ``--config_files`` run needs to repeat the best trial: the search's config files,
    the search file's fixed keys and command-line overrides (absolute data path), then the sampled values."""
    merged = {}
    for path in manifest["config_files"] or []:
        merged.update(read_yaml(path, "config file"))
    merged.update(manifest["base_config_dict"])
    merged = apply_params(merged, params)
    for key in TRIAL_KEYS:
        merged.pop(key, None)
    return _builtin(merged)


def write_best_yaml(path, manifest, best, metric):
    import yaml

    header = [
        f"# Best trial of the search in {os.path.dirname(path)}",
        f"# model {manifest['model']}, dataset {manifest['dataset']}, trial {best['trial_id']} ({best['status']}), "
        f"selected by valid {metric} = {best['valid_score']:.6g}",
        f"# valid: {json.dumps(best['valid'])}",
        f"# test:  {json.dumps(best['test'])}",
        f"# repeat it: python run_recbole_ssr.py --model={manifest['model']} --dataset={manifest['dataset']} "
        f"--config_files={path}",
    ]
    body = yaml.safe_dump(best_config(manifest, best["params"]), sort_keys=False, default_flow_style=False)
    from recbole_ssr.safe_io import atomic_write

    with atomic_write(path) as f:
        f.write("\n".join(header) + "\n" + body)


# --------------------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------------------

def _prepare_driver(model, dataset, config_files, base_config_dict, searched):
    """Resolve the configuration and build/convert the dataset once; returns what every trial needs."""
    import copy

    from recbole_ssr.config import Config
    from recbole_ssr.data.source import prepare_source

    config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=dict(base_config_dict))
    from recbole_ssr.validation import EXTRA_KEYS, check_known_keys, check_output_locations

    check_output_locations(config)
    roots = {key.split(".")[0] for key in searched}  # a misspelt search key fails now, not in every trial
    check_known_keys(dict.fromkeys(roots) | {EXTRA_KEYS: config[EXTRA_KEYS] if EXTRA_KEYS in config else None},
                     dict.fromkeys(roots, "the search space"))
    mappings = {}
    for root in dotted_roots(searched):  # the full mapping a dotted search key changes one entry of
        value = config[root] if root in config else None
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"search keys {', '.join(k for k in searched if k.startswith(root + '.'))} set entries "
                              f"of '{root}', but {model}'s '{root}' is {value!r}, not a mapping.")
        mappings[root] = copy.deepcopy(dict(value or {}))
    prepare_source(config)  # converts MMRec folders / builds the embedded dataset into the shared cache (no load)
    return {
        "mappings": mappings,
        "model": config["model"],
        "data_path": config["data_root"],
        "cache_dir": config["cache_dir"],
        "valid_metric": str(config["valid_metric"]).lower(),
        "bigger": bool(config["valid_metric_bigger"]),
        "early_stop_strict": bool(config["early_stop_strict"]) if "early_stop_strict" in config else False,
        "epochs": int(config["epochs"]),
    }


def _new_manifest(model, dataset, args, overrides, space_file, forced=None):
    space = load_search_space(space_file)
    clash = sorted(set(space.params) & set(overrides))
    if clash:
        raise ConfigError(f"{', '.join(clash)} searched in {space.source} and also set on the command line; "
                          "drop one of the two.")
    settings = resolve_settings(space, args, forced)
    base_config_dict = dict(space.fixed)
    base_config_dict.update(overrides)
    return {
        "model": model,
        "dataset": dataset,
        "space_file": space.source,
        "space": read_yaml(space.source),
        "settings": settings,
        "overrides": _builtin(overrides),
        "config_files": list(args.config_files or []),
        "base_config_dict": _builtin(base_config_dict),
        "command": " ".join(sys.argv),
        "status": "running",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _resume_manifest(model, dataset, args):
    target = args.resume
    if isinstance(target, str):
        folder = os.path.abspath(target)
        if not os.path.isfile(os.path.join(folder, MANIFEST)):
            raise ConfigError(f"--resume={target}: no {MANIFEST} in {folder}; pass a search folder (one made by "
                              "--tune, e.g. tune_results/VBPR-baby-20250101-120000).")
    else:
        root = resolve_settings(load_search_space(args.tune), args)["output"]
        folder = find_resumable(root, model, dataset)
        if folder is None:
            raise ConfigError(f"--resume: no unfinished search of {model} on {dataset} under {root}. Run without "
                              "--resume to start a new search (or pass --resume=FOLDER / --output=ROOT).")
    manifest = _read_json(os.path.join(folder, MANIFEST))
    for key, given in (("model", getattr(args, "model", None)), ("dataset", getattr(args, "dataset", None))):
        if given and given != manifest[key]:
            raise ConfigError(f"--resume: {folder} is a search of {manifest['model']} on {manifest['dataset']}, "
                              f"not --{key}={given}.")
    if manifest.get("status") == "done":
        raise ConfigError(f"--resume: the search in {folder} already finished (see {BEST_JSON}); start a new one "
                          "without --resume.")
    if args.tune and os.path.isfile(args.tune) and read_yaml(args.tune) != manifest["space"]:
        _say(f"note: {args.tune} changed since the search started; resuming with the search space stored in "
             f"{os.path.join(folder, MANIFEST)}.")
    return folder, manifest


def _scheduler(settings, epochs):
    if settings["scheduler"] == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # max_t one past the last epoch: ASHA stops a trial whose time reaches max_t, and a trial that trains all its
    # epochs must still send its final report (with its test result).
    max_t = max(1, epochs) + 1
    return ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=min(settings["grace_period"], max_t - 1),
                         reduction_factor=settings["reduction_factor"])


def run_search(model, dataset, args, overrides, forced_settings=None):
    """Run (or, with ``args.resume``, continue) a search; returns the best trial's summary (``best.json``).

    ``forced_settings`` override every other source of search settings (the tuned benchmark gives every model the
    same budget, scheduler and searcher this way)."""
    if not args.tune and not getattr(args, "resume", False):
        raise ConfigError("--tune=SPACE.yaml is required (e.g. properties/search/VBPR.yaml).")
    overrides = dict(overrides or {})
    overrides.pop("show_progress", None)

    if getattr(args, "resume", False):
        folder, manifest = _resume_manifest(model, dataset, args)
    else:
        folder, manifest = None, _new_manifest(model, dataset, args, overrides, args.tune, forced_settings)
    space = parse_search_space(manifest["space"], source=manifest["space_file"])
    settings = manifest["settings"]
    settings.setdefault("search_alg", "random")
    settings.setdefault("budget", "per_grid_point")
    settings.setdefault("seed", 0)
    if settings["budget"] == "exact":
        space = space.without_grid()
    space.check_searcher(settings["search_alg"])

    prepared = _prepare_driver(manifest["model"], manifest["dataset"], manifest["config_files"],
                               manifest["base_config_dict"], list(space.params))
    # the config files' content travels with the trials (no file of the driver is read on another Ray node)
    base_config_dict = inline_config_files(manifest["config_files"])
    base_config_dict.update(prepared["mappings"])
    base_config_dict.update(manifest["base_config_dict"], data_path=prepared["data_path"])
    if prepared["cache_dir"]:
        base_config_dict["cache_dir"] = prepared["cache_dir"]
    manifest["base_config_dict"] = _builtin(base_config_dict)
    manifest.update(metric=prepared["valid_metric"], mode="max" if prepared["bigger"] else "min")
    if folder is None:
        folder = new_search_folder(settings["output"], manifest["model"], manifest["dataset"])
    manifest["status"] = "running"
    _write_json(os.path.join(folder, MANIFEST), manifest)

    base = {
        "model": prepared["model"], "dataset": manifest["dataset"], "config_files": [],
        "config_dict": base_config_dict, "bigger": prepared["bigger"],
        "early_stop_strict": prepared["early_stop_strict"], "cpus_per_trial": settings["cpus_per_trial"],
        "trials_dir": os.path.join(folder, TRIALS_DIR),
    }
    n_trials = planned_trials(space, settings)
    if settings["budget"] == "exact" and n_trials < settings["num_samples"]:
        _say(f"note: {space.source} has only {n_trials} distinct points, fewer than the budget of "
             f"{settings['num_samples']} trials: every point is run once.")
    if (settings["budget"] != "exact" and settings["num_samples"] > 1
            and all(p.kind == "grid" for p in space.params.values())):
        _say(f"note: {space.source} has no random axis, so num_samples={settings['num_samples']} repeats every grid "
             "point with the same configuration (and seed); use num_samples=1, or search 'seed: {grid: [...]}'.")
    _say(f"search {'resumed' if args.resume else 'started'}: {manifest['model']} on {manifest['dataset']}, "
         f"{n_trials} trials ({_trial_count_text(space, settings)}), searcher {settings['search_alg']}, "
         f"scheduler {settings['scheduler']}, selection by valid {prepared['valid_metric']} ({manifest['mode']})\n"
         f"{space.describe()}\noutput: {folder}")

    with ray_session(getattr(args, "address", None), getattr(args, "num_cpus", None)):
        _check_resources(settings)
        records = _run_tuner(folder, manifest, space, settings, base, prepared, resume=bool(args.resume))
        summary = _finish(folder, manifest, space, settings, base, records)
    if getattr(args, "results", None):
        _write_json(args.results, summary)
    return summary


def _run_tuner(folder, manifest, space, settings, base, prepared, resume):
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(trial_main, base=base),
        {"cpu": settings["cpus_per_trial"], "gpu": settings["gpus_per_trial"]},
    )
    ray_path = os.path.join(folder, RAY_DIR)
    if resume and tune.Tuner.can_restore(ray_path):
        tuner = tune.Tuner.restore(ray_path, trainable, resume_unfinished=True, resume_errored=False)
    else:
        search_alg, num_samples = _searcher(space, settings, manifest["mode"])
        tuner = tune.Tuner(
            trainable,
            param_space=space.to_ray(),
            tune_config=tune.TuneConfig(
                metric="best_valid_score", mode=manifest["mode"], num_samples=num_samples, search_alg=search_alg,
                scheduler=_scheduler(settings, prepared["epochs"]), trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(storage_path=folder, name=RAY_DIR, verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
        )
    tuner.fit()
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")  # "no metrics" for never-started trials
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        analysis = tune.ExperimentAnalysis(ray_path)
    finally:
        quiet.setLevel(level)
    trials = sorted(analysis.trials, key=_creation_order)
    return [trial_record(trial, list(space.params), os.path.join(folder, TRIALS_DIR)) for trial in trials]


def planned_trials(space, settings):
    """How many trials a search runs."""
    if settings.get("budget") != "exact":
        return space.n_trials(settings["num_samples"])
    size = space.finite_size() if settings.get("search_alg", "random") == "random" else None
    return min(settings["num_samples"], size) if size is not None else settings["num_samples"]


def _trial_count_text(space, settings):
    if settings.get("budget") == "exact":
        return f"budget {settings['num_samples']} in all, grid axes drawn like choice axes"
    return f"{space.grid_points} grid point(s) x {settings['num_samples']} sample(s)"


def _searcher(space, settings, mode):
    """Ray Tune search algorithm and ``num_samples`` for a new search.

    * random, budget per_grid_point: Ray's own variant generator (grid axes enumerated, the rest sampled);
    * random, budget exact over a finite space: that many *distinct* points drawn with ``seed``, handed to Ray's
      variant generator as the points to evaluate (no configuration is trained twice);
    * optuna: Optuna's TPE sampler (seeded) through Ray Tune's ``OptunaSearch``; it reads the bounds of every
      axis from the param space (choice -> categorical, uniform/loguniform -> float, randint -> int).
    """
    from ray.tune.search import BasicVariantGenerator

    if settings["search_alg"] == "optuna":
        try:
            import optuna
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise ConfigError("search_alg optuna needs the optuna package: pip install 'optuna>=3'.") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=int(settings["seed"]))
        return OptunaSearch(sampler=sampler), settings["num_samples"]
    if settings["budget"] == "exact" and space.finite_size() is not None:
        points = space.distinct_points(settings["num_samples"], seed=int(settings["seed"]))
        return BasicVariantGenerator(points_to_evaluate=points, random_state=int(settings["seed"])), len(points)
    return BasicVariantGenerator(random_state=int(settings["seed"])), settings["num_samples"]


def _creation_order(trial):
    """Ray's trial ids end in a creation counter (``8f2c1_00012``)."""
    counter = trial.trial_id.rsplit("_", 1)[-1]
    return (int(counter) if counter.isdigit() else 0, trial.trial_id)


def _finish(folder, manifest, space, settings, base, records):
    searched = list(space.params)
    csv_path = os.path.join(folder, TRIALS_CSV)
    write_trials_csv(csv_path, records, searched)
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    if counts["unfinished"]:
        manifest["status"] = "interrupted"
        _write_json(os.path.join(folder, MANIFEST), manifest)
        _say(f"search interrupted ({counts['unfinished']} of {len(records)} trials unfinished; partial table in "
             f"{csv_path}). Continue it with the same command plus --resume (or --resume={folder}).")
        raise KeyboardInterrupt
    best = select_best(records, bigger=manifest["mode"] == "max")
    if best is None:
        manifest["status"] = "failed"
        _write_json(os.path.join(folder, MANIFEST), manifest)
        first = next((r for r in records if r["error"]), None)
        detail = f" First error ({first['trial_id']}): {first['error']} (see {first['error_file']})." if first else ""
        raise RecboleSSRError(f"every trial of the search in {folder} failed; nothing to select.{detail}")

    note = None
    if best["status"] == "stopped":
        best.update(_test_of_stopped(best, base, settings))
        note = best.pop("note", None)
        write_trials_csv(csv_path, records, searched)
    yaml_path = os.path.join(folder, BEST_YAML)
    write_best_yaml(yaml_path, manifest, best, manifest["metric"])
    if not settings.get("keep_checkpoints"):
        for record in records:
            if record is not best and record["trial_dir"]:
                shutil.rmtree(os.path.join(record["trial_dir"], CHECKPOINTS), ignore_errors=True)

    summary = {
        "model": manifest["model"], "dataset": manifest["dataset"], "metric": manifest["metric"],
        "mode": manifest["mode"], "scheduler": settings["scheduler"], "space_file": manifest["space_file"],
        "best": {k: best[k] for k in ("trial_id", "status", "params", "valid", "test", "test_source",
                                      "best_epoch", "epochs", "trial_dir", "checkpoint")},
        "best_config": yaml_path, "trials_csv": csv_path, "output_dir": folder,
        "n_trials": len(records), "n_completed": counts["completed"], "n_stopped": counts["stopped"],
        "n_failed": counts["failed"],
    }
    if note:
        summary["note"] = note
    _write_json(os.path.join(folder, BEST_JSON), summary)
    manifest["status"] = "done"
    _write_json(os.path.join(folder, MANIFEST), manifest)
    _report(summary)
    return summary


def _test_of_stopped(best, base, settings):
    """A best trial stopped by ASHA: evaluate its best-valid checkpoint on the test set (no retraining)."""
    import ray

    if not best["checkpoint"]:
        return {"test_source": None, "note": "the best trial was stopped early and left no checkpoint; no test result."}
    options = {"num_cpus": settings["cpus_per_trial"], "num_gpus": settings["gpus_per_trial"]}
    if best.get("node_id"):  # the checkpoint lies on the node the trial ran on (no shared filesystem assumed)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(best["node_id"], soft=False)
    task = ray.remote(_evaluate_checkpoint_task).options(**options)
    evaluated = ray.get(task.remote(base, best["params"], best["trial_dir"], best["checkpoint"]))
    update = {"test": evaluated["test"], "test_source": "checkpoint (trial stopped early by ASHA)"}
    drift = max((abs(evaluated["valid"].get(k, 0.0) - v) for k, v in best["valid"].items()), default=0.0)
    if drift > 1e-4:
        update["note"] = (f"re-evaluating the best trial's checkpoint gave valid results differing by {drift:.2g} "
                          "from the ones it reported.")
    return update


def _report(summary):
    best = summary["best"]

    def fmt(result):
        return ", ".join(f"{k}={v:.4f}" for k, v in result.items()) or "-"

    _say(f"best trial {best['trial_id']} ({best['status']}, {summary['n_trials']} trials: "
         f"{summary['n_completed']} completed, {summary['n_stopped']} stopped early, {summary['n_failed']} failed)\n"
         f"  params: {json.dumps(best['params'])}\n  valid:  {fmt(best['valid'])}\n  test:   {fmt(best['test'])}\n"
         f"  best configuration: {summary['best_config']}\n  every trial: {summary['trials_csv']}")
