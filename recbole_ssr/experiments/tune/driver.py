"""Hyper-parameter search on Ray Tune: ``run_recbole_ssr.py --model=M --dataset=D --tune=SPACE.yaml``.

How a search runs (see docs/tuning.md for the user's view):

1. The driver reads the search-space file (:mod:`recbole_ssr.config.search_space`), resolves the configuration once and
   prepares the dataset once (MMRec conversion / embedded-dataset build into the shared ``cache_dir``), so bad
   input fails before Ray starts and trials only load the cached files (measured on TikTok: loading the cache
   takes 0.25-0.5 s per trial, shipping a pickled dataset through the object store 0.1-0.2 s, both negligible
   next to training; the cache also stays correct when a searched key changes the dataset, so it is used).
2. Ray is started locally (``--num_cpus``; usage stats and dashboard off) or joined (``--address``). Every trial
   is the function trainable of :mod:`recbole_ssr.experiments.tune.trial` (unpickling it in a worker imports the
   package, which applies the RecBole fixes); it runs :func:`recbole_ssr.experiments.run.run` in its own trial
   folder with its own ``checkpoint_dir``, absolute data and cache paths, ``cpus_per_trial`` torch threads and the
   GPUs Ray gave it (fractions allowed).
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

import copy
import datetime
import json
import logging
import os
import shutil
import sys

from recbole_ssr.config.configurator import Config, visible_devices_unchanged
from recbole_ssr.data.source import prepare_source
from recbole_ssr.core.errors import ConfigError, RecboleSSRError
from recbole_ssr.core.report import plain, read_json, resumable_folder
from recbole_ssr.experiments.runner import ray_session
from recbole_ssr.core.safe_io import new_stamped_folder, stamped, write_json
from recbole_ssr.config.search_space import (default_settings, dotted_roots, inline_config_files, load_search_space,
                                      parse_search_space, read_yaml)
from recbole_ssr.experiments.tune.results import BEST_JSON, BEST_YAML, STATUSES, TRIALS_CSV, select_best, trial_record, \
    write_best_yaml, write_trials_csv
from recbole_ssr.experiments.tune.trial import CHECKPOINTS, evaluate_checkpoint_task, trial_dirname, trial_main
from recbole_ssr.model.registry import canonical_model, get_model, model_name, model_source
from recbole_ssr.config.validation import EXTRA_KEYS, check_known_keys, check_output_locations, check_search_space

KIND = "search"
MANIFEST = "search.json"
RAY_DIR = "ray"
TRIALS_DIR = "trials"


def _say(message):
    print(message, flush=True)


def resolve_settings(space, spec, forced=None):
    """defaults.yaml < the file's ``search:`` section < command-line flags < ``forced`` (the tuned benchmark's
    settings, the same for every model)."""
    settings = default_settings()
    settings.update({k: v for k, v in space.settings.items() if v is not None})
    for key in ("num_samples", "scheduler", "cpus_per_trial", "gpus_per_trial", "output", "search_alg", "grace_period",
                "reduction_factor"):
        value = getattr(spec, key)
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
    return new_stamped_folder(root, f"{model}-{dataset}", "search folder")


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



def _prepare_driver(model, dataset, config_files, base_config_dict, searched):
    """Resolve the configuration and build/convert the dataset once; returns what every trial needs."""
    with visible_devices_unchanged():  # Ray starts after this: it must see every GPU of the machine
        config = Config(model=model, dataset=dataset, config_file_list=config_files,
                        config_dict=dict(base_config_dict))
    check_output_locations(config)
    roots = {key.split(".")[0] for key in searched}  # a misspelt search key fails now, not in every trial
    check_known_keys(dict.fromkeys(roots) | {EXTRA_KEYS: config[EXTRA_KEYS] if EXTRA_KEYS in config else None},
                     dict.fromkeys(roots, "the search space"), config.model_class)
    mappings = {}
    for root in dotted_roots(searched):  # the full mapping a dotted search key changes one entry of
        value = config[root] if root in config else None
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"search keys {', '.join(k for k in searched if k.startswith(root + '.'))} set entries "
                              f"of '{root}', but {config['model']}'s '{root}' is {value!r}, not a mapping.")
        mappings[root] = copy.deepcopy(dict(value or {}))
    prepare_source(config)  # converts MMRec folders / builds the embedded dataset into the shared cache (no load)
    return {
        "mappings": mappings,
        "model": model,  # the name or spec (file.py:Class) every trial resolves again
        "data_path": config["data_root"],
        "cache_dir": config["cache_dir"],
        "valid_metric": str(config["valid_metric"]).lower(),
        "bigger": bool(config["valid_metric_bigger"]),
        "early_stop_strict": bool(config["early_stop_strict"]) if "early_stop_strict" in config else False,
        "epochs": int(config["epochs"]),
    }


def _new_manifest(model, dataset, spec, overrides, space_file, forced=None):
    space = load_search_space(space_file)
    clash = sorted(set(space.params) & set(overrides))
    if clash:
        raise ConfigError(f"{', '.join(clash)} searched in {space.source} and also set on the command line; "
                          "drop one of the two.")
    settings = resolve_settings(space, spec, forced)
    base_config_dict = dict(space.fixed)
    base_config_dict.update(overrides)
    return {
        "model": model,
        "dataset": dataset,
        "space_file": space.source,
        "space": read_yaml(space.source),
        "settings": settings,
        "overrides": plain(overrides),
        "config_files": list(spec.config_files or []),
        "base_config_dict": plain(base_config_dict),
        "command": " ".join(sys.argv),
        "status": "running",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _resume_manifest(model, dataset, spec):
    explicit = isinstance(spec.resume, str)

    def belongs(info):  # a folder given by name is checked only against the --model/--dataset given
        return all(info.get(key) == value for key, value, given in (("model", model, spec.model),
                                                                       ("dataset", dataset, spec.dataset))
                   if given or not explicit)

    root = None if explicit else resolve_settings(load_search_space(spec.tune), spec)["output"]
    folder, manifest = resumable_folder(spec.resume, root, "*", MANIFEST, belongs, "search", f"{model} on {dataset}")
    if spec.tune and os.path.isfile(spec.tune) and read_yaml(spec.tune) != manifest["space"]:
        _say(f"note: {spec.tune} changed since the search started; resuming with the search space stored in "
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


def run_search(models, dataset, spec, overrides, forced_settings=None):
    """Run (or, with ``spec.resume``, continue) a search of ``models`` (one model) in ``spec.tune``; returns the best
    trial's summary (``best.json``).

    ``forced_settings`` override every other source of search settings (the tuned benchmark gives every model the
    same budget, scheduler and searcher this way)."""
    if len(models) != 1:
        raise ConfigError(f"a search tunes one model, got {', '.join(models)}; with several models use --tune=auto "
                          "(the tuned benchmark).")
    model = canonical_model(models[0])  # a model file's path absolute: the trials run in their own folders
    if not spec.tune and not spec.resume:
        raise ConfigError("--tune=SPACE.yaml is required (e.g. properties/search/VBPR.yaml).")
    overrides = dict(overrides or {})
    overrides.pop("show_progress", None)

    if spec.resume:
        folder, manifest = _resume_manifest(model, dataset, spec)
    else:
        folder, manifest = None, _new_manifest(model, dataset, spec, overrides, spec.tune, forced_settings)
    space = parse_search_space(manifest["space"], source=manifest["space_file"])
    settings = manifest["settings"]
    settings.setdefault("search_alg", "random")
    settings.setdefault("budget", "per_grid_point")
    settings.setdefault("seed", 0)
    if settings["budget"] == "exact":
        space = space.without_grid()
    space.check_searcher(settings["search_alg"])

    # the space's values within the model's ranges, before its fixed keys reach Config as "the command line"
    check_search_space(space, get_model(manifest["model"]))
    prepared = _prepare_driver(manifest["model"], manifest["dataset"], manifest["config_files"],
                               manifest["base_config_dict"], list(space.params))
    # the config files' content travels with the trials (no file of the driver is read on another Ray node)
    base_config_dict = inline_config_files(manifest["config_files"])
    base_config_dict.update(prepared["mappings"])
    base_config_dict.update(manifest["base_config_dict"], data_path=prepared["data_path"])
    if prepared["cache_dir"]:
        base_config_dict["cache_dir"] = prepared["cache_dir"]
    manifest["base_config_dict"] = plain(base_config_dict)
    manifest.update(metric=prepared["valid_metric"], mode="max" if prepared["bigger"] else "min")
    if folder is None:
        folder = new_search_folder(settings["output"], model_name(manifest["model"]), manifest["dataset"])
    manifest["status"] = "running"
    write_json(os.path.join(folder, MANIFEST), plain(manifest))

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
    _say(f"search {'resumed' if spec.resume else 'started'}: {model_name(manifest['model'])} on {manifest['dataset']}, "
         f"{n_trials} trials ({_trial_count_text(space, settings)}), searcher {settings['search_alg']}, "
         f"scheduler {settings['scheduler']}, selection by valid {prepared['valid_metric']} ({manifest['mode']})\n"
         f"{space.describe()}\noutput: {folder}")

    with ray_session(spec.address, spec.num_cpus):
        _check_resources(settings)
        records = _run_tuner(folder, manifest, space, settings, base, prepared, resume=bool(spec.resume))
        summary = _finish(folder, manifest, space, settings, base, records)
    if spec.results:
        write_json(spec.results, stamped(plain(summary), KIND, [summary["model"]], manifest["dataset"]))
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
        write_json(os.path.join(folder, MANIFEST), plain(manifest))
        _say(f"search interrupted ({counts['unfinished']} of {len(records)} trials unfinished; partial table in "
             f"{csv_path}). Continue it with the same command plus --resume (or --resume={folder}).")
        raise KeyboardInterrupt
    best = select_best(records, bigger=manifest["mode"] == "max")
    if best is None:
        manifest["status"] = "failed"
        write_json(os.path.join(folder, MANIFEST), plain(manifest))
        first = next((r for r in records if r["error"]), None)
        detail = f" First error ({first['trial_id']}): {first['error']} (see {first['error_file']})." if first else ""
        if first and first["error_file"]:  # its traceback: a bug in a model's own code points at its line
            try:
                with open(first["error_file"], "r", encoding="utf-8", errors="replace") as f:
                    print(f.read().rstrip(), file=sys.stderr)
            except OSError:
                pass
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
        "model": model_name(manifest["model"]), "model_source": model_source(get_model(manifest["model"])),
        "dataset": manifest["dataset"], "metric": manifest["metric"],
        "mode": manifest["mode"], "scheduler": settings["scheduler"], "space_file": manifest["space_file"],
        "best": {k: best[k] for k in ("trial_id", "status", "params", "valid", "test", "test_source",
                                      "best_epoch", "epochs", "trial_dir", "checkpoint")},
        "best_config": yaml_path, "trials_csv": csv_path, "output_dir": folder,
        "n_trials": len(records), "n_completed": counts["completed"], "n_stopped": counts["stopped"],
        "n_failed": counts["failed"],
    }
    if note:
        summary["note"] = note
    write_json(os.path.join(folder, BEST_JSON), stamped(plain(summary), KIND, [summary["model"]],
                                                        manifest["dataset"]))
    manifest["status"] = "done"
    write_json(os.path.join(folder, MANIFEST), plain(manifest))
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
    task = ray.remote(evaluate_checkpoint_task).options(**options)
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
