"""Fair benchmark: every model searched on validation with the same budget, each winner re-run over seeds, one table.

    python run_recbole_ssr.py --model=SSR,SMORE,MGCN,FREEDOM,LightGCN --dataset=tiktok --tune=auto \\
        --num_samples=16 --epochs=30 --seeds=3 --results=tuned.json

1. **Searches** (:mod:`recbole_ssr.experiments.tune`), one model after the other on one Ray session, each from
   ``properties/search/<Model>.yaml`` (``--tune=auto``; your own model ``file.py:Class``: ``Class.search.yaml``
   beside its file; an explicit file works for one model). Every model gets the
   same settings, whatever its file's own ``search:`` section says: ``num_samples`` trials in all (grid axes are
   drawn like choice axes, distinct points of a finite space, so no configuration is trained twice), the same
   searcher (``--search_alg``), scheduler (ASHA, ``grace_period``, ``reduction_factor``), ``--epochs`` cap and
   resources. Selection strictly by the validation metric.
2. **Seeded runs**: each model's best configuration with ``--seeds`` seeds (``seed, seed+1, ...``), each a Ray
   task in a fresh worker process (:mod:`recbole_ssr.experiments.runner`), submitted as soon as that model's search is done
   (they share the CPUs with the next search).
3. **Outputs** in the benchmark folder ``<output>/benchmark-<dataset>-<stamp>/``: ``benchmark.json`` (state, used
   by ``--resume``), ``searches/`` (every search folder), ``<Model>.best.yaml``, ``runs.jsonl`` (seeded runs as
   they finish; their per-user test metrics in ``runs.users.json.gz``), and the table — test metrics mean ± std at
   the best-valid epoch with every model's significance against the best one (docs/significance.md), plus per
   model the chosen configuration, trials run, trials ASHA stopped, failures and CPU-hours — as ``--results`` JSON
   + CSV + LaTeX (default ``results.json`` in the folder; :mod:`recbole_ssr.experiments.tables`) and markdown on
   stdout.

``--resume`` continues the latest unfinished benchmark of the same models and dataset (or ``--resume=FOLDER``):
finished searches and finished seeded runs are kept, an interrupted search resumes (``--tune ... --resume``), the rest
runs. With ``--address`` everything runs on that Ray cluster (docs/tuning.md).
"""

import csv
import datetime
import glob
import json
import os
import shutil
import sys
import threading

import yaml

from recbole_ssr.experiments import tables
from recbole_ssr.experiments.side_by_side import METRICS, TABLE_HEADER, results_stem, results_table, summarise
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.core.paths import properties_dir
from recbole_ssr.core.report import files_to_table_main, read_json, resumable_folder, write_csv
from recbole_ssr.experiments.runner import RayBatch, RunSpec, ray_session
from recbole_ssr.core.safe_io import (append_jsonl, check_may_replace, check_may_replace_table, check_results_name,
                                 check_writable_file, new_stamped_folder, read_jsonl, stamped, write_json)
from recbole_ssr.config.search_space import default_settings, load_search_space, yaml_loader
from recbole_ssr.core.spec import ExperimentSpec
from recbole_ssr.experiments.tune.driver import run_search
from recbole_ssr.model.registry import beside_model, get_model, is_model_spec, model_name
from recbole_ssr.config.validation import check_search_space
from recbole_ssr.training.per_user import sidecar_path

KIND = "tuned benchmark"
MANIFEST = "benchmark.json"
RUNS = "runs.jsonl"
SEARCHES = "searches"
#: settings every model's search gets, from the command line or properties/search/defaults.yaml
SHARED_SETTINGS = ("num_samples", "scheduler", "grace_period", "reduction_factor", "search_alg", "seed",
                   "cpus_per_trial", "gpus_per_trial", "keep_checkpoints")
DEFAULT_BUDGET = 16
#: the epoch cap of every model's trials and seeded runs when --epochs is not given
DEFAULT_EPOCH_CAP = 100


def _say(text):
    print(f"[tuned benchmark] {text}", flush=True)


def space_file(model, tune_arg):
    """``auto`` -> the shipped ``properties/search/<Model>.yaml``, or ``<Class>.search.yaml`` beside the file of
    your own model; otherwise the path given."""
    if tune_arg != "auto":
        return os.path.abspath(tune_arg)
    own = beside_model(get_model(model), ".search.yaml") if is_model_spec(model) else None
    if own is not None:
        if not os.path.isfile(own):
            raise ConfigError(f"--tune=auto: no search space for {model_name(model)}: write {own} beside its model "
                              "file (the format of properties/search/*.yaml, docs/tuning.md; e.g. "
                              "examples/MeanFusion.search.yaml).")
        return own
    path = os.path.join(properties_dir(), "search", f"{model}.yaml")
    if not os.path.isfile(path):
        shipped = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(properties_dir(), "search", "*.yaml"))
                         if not p.endswith("defaults.yaml"))
        raise ConfigError(f"--tune=auto: no search space for {model} ({path}). Spaces are shipped for "
                          f"{', '.join(shipped)}; write one (docs/tuning.md) and pass it with --tune=FILE for a "
                          "single model.")
    return path


def shared_settings(spec):
    """The search settings of every model: properties/search/defaults.yaml < command line; budget exact."""
    settings = default_settings()
    settings["num_samples"] = DEFAULT_BUDGET
    for key in ("num_samples", "scheduler", "search_alg", "cpus_per_trial", "gpus_per_trial", "grace_period",
                "reduction_factor"):
        value = getattr(spec, key)
        if value is not None:
            settings[key] = value
    if spec.cpus_per_trial is None and spec.cpus_per_run is not None:
        settings["cpus_per_trial"] = spec.cpus_per_run
    if spec.gpus_per_trial is None and spec.gpus_per_run is not None:
        settings["gpus_per_trial"] = spec.gpus_per_run
    settings["budget"] = "exact"
    return {k: settings[k] for k in SHARED_SETTINGS + ("budget",) if k in settings}


def _new_folder(root, dataset):
    return new_stamped_folder(root, f"benchmark-{dataset}", "benchmark folder")


def _open(models, dataset, spec, overrides):
    """A new benchmark folder and manifest, or (``--resume``) the one to continue."""
    root = os.path.abspath(spec.output or "tune_results")
    if spec.resume:
        folder, manifest = resumable_folder(
            spec.resume, root, "benchmark-*", MANIFEST,
            lambda info: info.get("models") == models and info.get("dataset") == dataset, "benchmark",
            f"{','.join(models)} on {dataset}")
        _say(f"resuming {folder}")
        return folder, manifest
    spaces = {model: space_file(model, spec.tune) for model in models}
    for model, path in spaces.items():  # every space readable and within the models' ranges before anything runs
        space = load_search_space(path)
        check_search_space(space, get_model(model))
        clash = sorted(set(space.params) & set(overrides))
        if clash:
            raise ConfigError(f"{', '.join(clash)} searched in {path} and also set on the command line; drop one "
                              "of the two.")
    folder = _new_folder(root, dataset)
    seed0 = int(overrides.get("seed", 999))
    manifest = {
        "models": models, "dataset": dataset, "spaces": spaces, "settings": shared_settings(spec),
        "seeds": [seed0 + i for i in range(max(1, int(spec.seeds or 1)))],
        "overrides": {k: v for k, v in overrides.items() if k != "seed"},
        "config_files": list(spec.config_files or []), "searches": {}, "status": "running",
        "ray_runs": spec.ray_runs,
        "command": " ".join(sys.argv), "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    write_json(os.path.join(folder, MANIFEST), manifest)
    return folder, manifest


def _search_spec(manifest, model, folder, resume_folder):
    """The spec of one model's search: its space, the benchmark's config files, its folder under searches/."""
    return ExperimentSpec(model=model, dataset=manifest["dataset"], config_files=manifest["config_files"],
                          tune=manifest["spaces"][model], resume=resume_folder or False,
                          output=os.path.join(folder, SEARCHES))


def _search(manifest, model, folder):
    """One model's search (new or resumed); returns its best.json summary."""
    state = manifest["searches"].get(model, {})
    if state.get("status") == "done":
        return read_json(state["best_json"])
    resume_folder = state.get("folder")
    if resume_folder and not os.path.isfile(os.path.join(resume_folder, "search.json")):
        resume_folder = None
    before = set(glob.glob(os.path.join(folder, SEARCHES, "*")))
    try:
        summary = run_search([model], manifest["dataset"], _search_spec(manifest, model, folder, resume_folder),
                             dict(manifest["overrides"]), forced_settings=manifest["settings"])
    finally:  # remember the search folder at once, so that an interrupted search resumes
        if not resume_folder:
            new = sorted(set(glob.glob(os.path.join(folder, SEARCHES, "*"))) - before)
            if new:
                manifest["searches"][model] = {"folder": new[-1], "status": "running"}
                write_json(os.path.join(folder, MANIFEST), manifest)
    manifest["searches"][model] = {"folder": summary["output_dir"], "status": "done",
                                   "best_json": os.path.join(summary["output_dir"], "best.json")}
    shutil.copyfile(summary["best_config"], os.path.join(folder, f"{model_name(model)}.best.yaml"))
    write_json(os.path.join(folder, MANIFEST), manifest)
    return summary


def _search_cpu_hours(summary, cpus):
    seconds = 0.0
    with open(summary["trials_csv"], newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("seconds"):
                seconds += float(row["seconds"])
    return seconds * float(cpus) / 3600.0


def _seeded_specs(manifest, model, summary):
    with open(summary["best_config"], "r", encoding="utf-8") as f:
        best = yaml.load(f.read(), Loader=yaml_loader()) or {}
    best.pop("seed", None)
    best.setdefault("per_user_metrics", True)  # for the significance tests of the table
    return [RunSpec(model, manifest["dataset"], seed, dict(best, seed=seed)) for seed in manifest["seeds"]]


def run_tuned_benchmark(models, dataset, spec, overrides):
    """Searches, seeded runs and the table (see the module docstring); returns the summary rows."""
    overrides = dict(overrides or {})
    overrides.pop("show_progress", None)
    if "epochs" not in overrides and not spec.resume:
        overrides["epochs"] = DEFAULT_EPOCH_CAP
        _say(f"epoch cap {DEFAULT_EPOCH_CAP} for every model (--epochs=N sets another)")
    check_results_target(spec.results, models, dataset, spec.overwrite)
    folder, manifest = _open(models, dataset, spec, overrides)
    runs_path = os.path.join(folder, RUNS)
    done = {}
    if os.path.isfile(runs_path):
        for run in read_jsonl(runs_path)[0]:
            if isinstance(run, dict) and run.get("status") == "ok":
                done[(run["model"], int(run["seed"]))] = run
    if done:
        _say(f"{len(done)} finished seeded run(s) kept from {runs_path}")
    lock = threading.Lock()

    def keep(outcome):
        with lock:
            users = outcome.pop("per_user", None)  # to the sidecar, never into the log
            append_jsonl(runs_path, outcome)
            tables.keep_per_user(runs_path, outcome, users, _say, spec.overwrite)

    summaries = {}
    with ray_session(spec.address, spec.num_cpus):
        batch = RayBatch(label="tuned benchmark", **manifest["ray_runs"])
        collector = _Collector(batch, keep)
        for model in models:
            summaries[model_name(model)] = _search(manifest, model, folder)
            for run in _seeded_specs(manifest, model, summaries[model_name(model)]):
                if run.key not in done:
                    collector.submit(run)
        fresh = collector.finish()
    runs = list(done.values()) + fresh
    names = [model_name(m) for m in models]  # tables and results call your own models by class name
    order = {(m, s): i for i, (m, s) in enumerate((m, s) for m in names for s in manifest["seeds"])}
    runs.sort(key=lambda r: order.get((r["model"], int(r["seed"])), len(order)))
    rows = _write_outputs(folder, dict(manifest, models=names), summaries, runs, spec.results, [runs_path],
                          spec.overwrite)
    if all(r.get("status") == "ok" for r in runs) and len(runs) == len(order):
        manifest["status"] = "done"
    else:
        manifest["status"] = "incomplete"
        _say("some seeded runs failed (see the table); run the same command with --resume to run them again.")
    write_json(os.path.join(folder, MANIFEST), manifest)
    return rows


class _Collector:
    """Gathers seeded runs in a background thread while the searches go on (each one kept as it finishes)."""

    def __init__(self, batch, keep):
        self.batch, self.keep, self.outcomes = batch, keep, []
        self.thread, self.stop = None, threading.Event()

    def submit(self, spec):
        self.batch.submit(spec)
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            for _, outcome in self.batch.results(timeout=2.0):
                status = outcome["status"] if outcome["status"] == "ok" else f"FAILED ({outcome.get('error')})"
                _say(f"{outcome['model']} seed {outcome['seed']}: {status}")
                self.keep(outcome)
                self.outcomes.append(outcome)
            if not self.batch.pending:
                self.stop.wait(2.0)

    def finish(self):
        if self.thread is not None:
            while self.batch.pending:
                self.thread.join(timeout=2.0)
            self.stop.set()
            self.thread.join()
        return self.outcomes


def _write_outputs(folder, manifest, summaries, runs, results_path, sources, overwrite=False):
    """The table: ``runs`` summarised and tested for significance (their per-user metrics from the sidecars beside
    the runs logs ``sources``), printed and written as JSON, CSV and LaTeX with the per-user sidecar."""
    models, seeds = manifest["models"], manifest["seeds"]
    rows = summarise(runs, models)
    result, records, why = tables.significance_against_best(runs, models, [sidecar_path(p) for p in sources], _say)
    tables.add_columns(rows, result)
    cpus_trial = manifest["settings"].get("cpus_per_trial", 1)
    cpus_run = manifest["ray_runs"]["cpus_per_run"]
    searches = {}
    for row in rows:
        summary = summaries[row["model"]]
        mine = [r for r in runs if r["model"] == row["model"]]
        seeded_hours = sum(float(r.get("run_seconds") or r.get("wall_seconds") or 0) for r in mine) * cpus_run / 3600
        search_hours = _search_cpu_hours(summary, cpus_trial)
        row.update(chosen=json.dumps(summary["best"]["params"], sort_keys=True), trials=summary["n_trials"],
                   stopped_by_asha=summary["n_stopped"], failed_trials=summary["n_failed"],
                   search_valid=summary["best"]["valid"].get(summary["metric"]),
                   search_cpu_hours=round(search_hours, 3), seeded_cpu_hours=round(seeded_hours, 3),
                   cpu_hours=round(search_hours + seeded_hours, 3))
        searches[row["model"]] = dict(summary, cpu_hours=row["cpu_hours"])
    table = results_table(rows, len(seeds), result) + "\n\n" + configuration_table(rows, manifest)
    print(f"\n{manifest['dataset']}: each model searched with {manifest['settings']['num_samples']} trials "
          f"({manifest['settings']['search_alg']}, {manifest['settings']['scheduler']}), best configuration run "
          f"with seeds {seeds}; test metrics at the best-valid epoch, mean ± std\n")
    print(table)
    results_path = os.path.abspath(results_path or os.path.join(folder, "results.json"))
    stem = results_stem(results_path)
    write_json(f"{stem}.json", stamped({"dataset": manifest["dataset"], "models": models, "seeds": seeds,
                                         "settings": manifest["settings"], "overrides": manifest["overrides"],
                                         "benchmark_dir": folder, "summary": rows,
                                         "significance": tables.json_field(result, why), "searches": searches,
                                         "runs": runs, "table": table}, KIND, models, manifest["dataset"]))
    write_csv(f"{stem}.csv", rows)
    settings = manifest["settings"]
    note = (f"Each model's configuration is the best of {settings['num_samples']} trials by validation "
            f"{tables.selection_metric(runs)} ({settings.get('search_alg', 'random')} search, "
            f"{settings.get('scheduler', 'asha')} scheduler).")
    written = tables.write_companions(results_path, rows, result, records, METRICS, len(seeds), manifest["dataset"],
                                      note=note, overwrite=overwrite)
    print(f"\nwritten: {', '.join([f'{stem}.json', f'{stem}.csv'] + written)}; best configurations: "
          f"{folder}/<Model>.best.yaml")
    return rows


def configuration_table(rows, manifest):
    """Per model: the chosen configuration and what its search cost."""
    lines = ["| model | chosen configuration | trials | stopped by ASHA | failed | search valid | CPU-hours |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        valid = f"{row['search_valid']:.4f}" if row.get("search_valid") is not None else "-"
        lines.append(f"| {row['model']} | `{row['chosen']}` | {row['trials']} | {row['stopped_by_asha']} | "
                     f"{row['failed_trials']} | {valid} | {row['cpu_hours']:.2f} |")
    return "\n".join(lines)


def check_results_target(results_path, models, dataset, overwrite=False):
    """The ``--results`` of a tuned benchmark (and its .csv, .tex and per-user sidecar), checked before anything
    runs."""
    if results_path is None:
        return
    check_results_name(results_path)
    check_writable_file(results_path, "--results")
    check_may_replace(results_path, KIND, models, dataset, overwrite=overwrite)
    check_may_replace_table(f"{results_stem(results_path)}.csv", TABLE_HEADER, "--results table", overwrite)
    tables.check_companions(results_path, overwrite)


def report_folders(folders, results_path=None, overwrite=False):
    """The table of one or more benchmark folders, finished or not: every model whose search is done, with its
    finished seeded runs (e.g. a benchmark split over several commands or machines, or one still running).
    The folders must share dataset, settings, epoch cap and seeds — otherwise their models were not tuned alike."""
    manifests = []
    for folder in folders:
        path = os.path.join(folder, MANIFEST)
        if not os.path.isfile(path):
            raise ConfigError(f"{folder}: no {MANIFEST}; pass folders made by --tune=auto (tune_results/benchmark-*).")
        manifests.append((os.path.abspath(folder), read_json(path)))
    first = manifests[0][1]
    for folder, manifest in manifests[1:]:
        for key in ("dataset", "settings", "overrides", "seeds"):
            if manifest[key] != first[key]:
                raise ConfigError(f"{folder}: its {key} ({manifest[key]!r}) differs from {manifests[0][0]}'s "
                                  f"({first[key]!r}); benchmarks run differently cannot share one table.")
    summaries, runs, models, pending, logs = {}, [], [], [], []
    for folder, manifest in manifests:
        for model in manifest["models"]:  # a name or your own model's spec; the table calls it by class name
            state, name = manifest["searches"].get(model, {}), model_name(model)
            if name in summaries or state.get("status") != "done":
                if state.get("status") != "done":
                    pending.append(name)
                continue
            summaries[name] = read_json(state["best_json"])
            models.append(name)
        if os.path.isfile(os.path.join(folder, RUNS)):
            logs.append(os.path.join(folder, RUNS))
            found = read_jsonl(os.path.join(folder, RUNS))[0]
            runs += [r for r in found if isinstance(r, dict) and r.get("status") == "ok" and r["model"] in summaries]
    if not models:
        raise ConfigError("no finished search in these folders yet.")
    if pending:
        _say(f"not in the table (search not finished): {', '.join(dict.fromkeys(pending))}")
    check_results_target(results_path, models, first["dataset"], overwrite)
    manifest = dict(first, models=models)
    return _write_outputs(manifests[0][0], manifest, summaries, runs, results_path, logs, overwrite)


def main(argv=None):
    """``python -m recbole_ssr.experiments.tune.tuned_benchmark FOLDER... [--results=OUT.json]``: the table of benchmark folders."""
    return files_to_table_main("python -m recbole_ssr.experiments.tune.tuned_benchmark", main.__doc__,
                               "benchmark folders (tune_results/benchmark-<dataset>-<stamp>)", report_folders, argv)


if __name__ == "__main__":
    raise SystemExit(main())
