"""Fair benchmark: every model searched on validation with the same budget, each winner re-run over seeds, one table.

    python run_recbole_ssr.py --model=SSR,SMORE,MGCN,FREEDOM,LightGCN --dataset=tiktok --tune=auto \\
        --num_samples=16 --epochs=30 --seeds=3 --results=tuned.json

1. **Searches** (:mod:`recbole_ssr.tuning`), one model after the other on one Ray session, each from
   ``properties/search/<Model>.yaml`` (``--tune=auto``; an explicit file works for one model). Every model gets the
   same settings, whatever its file's own ``search:`` section says: ``num_samples`` trials in all (grid axes are
   drawn like choice axes, distinct points of a finite space, so no configuration is trained twice), the same
   searcher (``--search_alg``), scheduler (ASHA, ``grace_period``, ``reduction_factor``), ``--epochs`` cap and
   resources. Selection strictly by the validation metric.
2. **Seeded runs**: each model's best configuration with ``--seeds`` seeds (``seed, seed+1, ...``), each a Ray
   task in a fresh worker process (:mod:`recbole_ssr.runner`), submitted as soon as that model's search is done
   (they share the CPUs with the next search).
3. **Outputs** in the benchmark folder ``<output>/benchmark-<dataset>-<stamp>/``: ``benchmark.json`` (state, used
   by ``--resume``), ``searches/`` (every search folder), ``<Model>.best.yaml``, ``runs.jsonl`` (seeded runs as
   they finish), and the table — test metrics mean ± std at the best-valid epoch, plus per model the chosen
   configuration, trials run, trials ASHA stopped, failures and CPU-hours — as ``--results`` JSON + CSV
   (default ``results.json`` in the folder) and markdown on stdout.

``--resume`` continues the latest unfinished benchmark of the same models and dataset (or ``--resume=FOLDER``):
finished searches and finished seeded runs are kept, an interrupted search resumes (``tuning --resume``), the rest
runs. With ``--address`` everything runs on that Ray cluster (docs/tuning.md).
"""

import datetime
import glob
import json
import os
import shutil
import sys
import threading

from recbole_ssr.errors import ConfigError

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
    """``auto`` -> the shipped ``properties/search/<Model>.yaml``; otherwise the path given."""
    if tune_arg != "auto":
        return os.path.abspath(tune_arg)
    from recbole_ssr.paths import properties_dir

    path = os.path.join(properties_dir(), "search", f"{model}.yaml")
    if not os.path.isfile(path):
        shipped = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(properties_dir(), "search", "*.yaml"))
                         if not p.endswith("defaults.yaml"))
        raise ConfigError(f"--tune=auto: no search space for {model} ({path}). Spaces are shipped for "
                          f"{', '.join(shipped)}; write one (docs/tuning.md) and pass it with --tune=FILE for a "
                          "single model.")
    return path


def shared_settings(args):
    """The search settings of every model: properties/search/defaults.yaml < command line; budget exact."""
    from recbole_ssr.search_space import default_settings

    settings = default_settings()
    settings["num_samples"] = DEFAULT_BUDGET
    for key in ("num_samples", "scheduler", "search_alg", "cpus_per_trial", "gpus_per_trial", "grace_period",
                "reduction_factor"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if getattr(args, "cpus_per_trial", None) is None and getattr(args, "cpus_per_run", None) is not None:
        settings["cpus_per_trial"] = args.cpus_per_run
    if getattr(args, "gpus_per_trial", None) is None and getattr(args, "gpus_per_run", None) is not None:
        settings["gpus_per_trial"] = args.gpus_per_run
    settings["budget"] = "exact"
    return {k: settings[k] for k in SHARED_SETTINGS + ("budget",) if k in settings}


def _read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def _write_json(path, payload):
    from recbole_ssr.quick_start import write_json

    write_json(path, payload)


def _new_folder(root, dataset):
    os.makedirs(root, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        folder = os.path.join(root, f"benchmark-{dataset}-{stamp}" + ("" if n == 1 else f"-{n}"))
        try:
            os.makedirs(folder)
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a new benchmark folder under {root}.")


def _find_resumable(root, models, dataset):
    found = []
    for path in glob.glob(os.path.join(root, "benchmark-*", MANIFEST)):
        try:
            info = _read_json(path)
        except (OSError, ValueError):
            continue
        if info.get("models") == models and info.get("dataset") == dataset and info.get("status") != "done":
            found.append((info.get("created", ""), os.path.dirname(path)))
    return max(found)[1] if found else None


def _open(models, dataset, args, overrides):
    """A new benchmark folder and manifest, or (``--resume``) the one to continue."""
    root = os.path.abspath(getattr(args, "output", None) or "tune_results")
    if getattr(args, "resume", False):
        folder = (os.path.abspath(args.resume) if isinstance(args.resume, str)
                  else _find_resumable(root, models, dataset))
        if folder is None or not os.path.isfile(os.path.join(folder, MANIFEST)):
            where = folder if isinstance(args.resume, str) else root
            raise ConfigError(f"--resume: no unfinished benchmark of {','.join(models)} on {dataset} in {where}. "
                              "Run without --resume to start one (or pass --resume=FOLDER / --output=ROOT).")
        manifest = _read_json(os.path.join(folder, MANIFEST))
        if manifest["models"] != models or manifest["dataset"] != dataset:
            raise ConfigError(f"--resume: {folder} is a benchmark of {','.join(manifest['models'])} on "
                              f"{manifest['dataset']}, not of {','.join(models)} on {dataset}.")
        if manifest.get("status") == "done":
            raise ConfigError(f"--resume: the benchmark in {folder} already finished; start a new one without "
                              "--resume.")
        _say(f"resuming {folder}")
        return folder, manifest
    spaces = {model: space_file(model, args.tune) for model in models}
    for model, path in spaces.items():  # every space readable before anything runs
        from recbole_ssr.search_space import load_search_space

        space = load_search_space(path)
        clash = sorted(set(space.params) & set(overrides))
        if clash:
            raise ConfigError(f"{', '.join(clash)} searched in {path} and also set on the command line; drop one "
                              "of the two.")
    folder = _new_folder(root, dataset)
    seed0 = int(overrides.get("seed", 999))
    manifest = {
        "models": models, "dataset": dataset, "spaces": spaces, "settings": shared_settings(args),
        "seeds": [seed0 + i for i in range(max(1, int(args.seeds or 1)))],
        "overrides": {k: v for k, v in overrides.items() if k != "seed"},
        "config_files": list(args.config_files or []), "searches": {}, "status": "running",
        "ray_runs": {"cpus_per_run": float(getattr(args, "cpus_per_run", None) or 1),
                     "gpus_per_run": float(getattr(args, "gpus_per_run", None) or 0)},
        "command": " ".join(sys.argv), "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    _write_json(os.path.join(folder, MANIFEST), manifest)
    return folder, manifest


def _search_args(manifest, model, folder, resume_folder):
    import types

    return types.SimpleNamespace(
        tune=manifest["spaces"][model], resume=resume_folder or False, results=None, seeds=1, address=None,
        num_cpus=None, config_files=manifest["config_files"], model=model, dataset=manifest["dataset"],
        num_samples=None, scheduler=None, cpus_per_trial=None, gpus_per_trial=None, search_alg=None,
        grace_period=None, reduction_factor=None,
        output=os.path.join(folder, SEARCHES))


def _search(manifest, model, folder):
    """One model's search (new or resumed); returns its best.json summary."""
    from recbole_ssr.tuning import run_search

    state = manifest["searches"].get(model, {})
    if state.get("status") == "done":
        return _read_json(state["best_json"])
    resume_folder = state.get("folder")
    if resume_folder and not os.path.isfile(os.path.join(resume_folder, "search.json")):
        resume_folder = None
    before = set(glob.glob(os.path.join(folder, SEARCHES, "*")))
    try:
        summary = run_search(model, manifest["dataset"], _search_args(manifest, model, folder, resume_folder),
                             dict(manifest["overrides"]), forced_settings=manifest["settings"])
    finally:  # remember the search folder at once, so that an interrupted search resumes
        if not resume_folder:
            new = sorted(set(glob.glob(os.path.join(folder, SEARCHES, "*"))) - before)
            if new:
                manifest["searches"][model] = {"folder": new[-1], "status": "running"}
                _write_json(os.path.join(folder, MANIFEST), manifest)
    manifest["searches"][model] = {"folder": summary["output_dir"], "status": "done",
                                   "best_json": os.path.join(summary["output_dir"], "best.json")}
    shutil.copyfile(summary["best_config"], os.path.join(folder, f"{model}.best.yaml"))
    _write_json(os.path.join(folder, MANIFEST), manifest)
    return summary


def _search_cpu_hours(summary, cpus):
    import csv

    seconds = 0.0
    with open(summary["trials_csv"], newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("seconds"):
                seconds += float(row["seconds"])
    return seconds * float(cpus) / 3600.0


def _seeded_specs(manifest, model, summary):
    import yaml

    from recbole_ssr.runner import RunSpec
    from recbole_ssr.search_space import yaml_loader

    with open(summary["best_config"], "r", encoding="utf-8") as f:
        best = yaml.load(f.read(), Loader=yaml_loader()) or {}
    best.pop("seed", None)
    return [RunSpec(model, manifest["dataset"], seed, dict(best, seed=seed)) for seed in manifest["seeds"]]


def run_tuned_benchmark(models, dataset, args, overrides):
    """Searches, seeded runs and the table (see the module docstring); returns the summary rows."""
    from recbole_ssr.runner import RayBatch
    from recbole_ssr.tuning import ray_session

    overrides = dict(overrides or {})
    overrides.pop("show_progress", None)
    if "epochs" not in overrides and not getattr(args, "resume", False):
        overrides["epochs"] = DEFAULT_EPOCH_CAP
        _say(f"epoch cap {DEFAULT_EPOCH_CAP} for every model (--epochs=N sets another)")
    folder, manifest = _open(models, dataset, args, overrides)
    runs_path = os.path.join(folder, RUNS)
    done = {}
    if os.path.isfile(runs_path):
        with open(runs_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    run = json.loads(line)
                    if run.get("status") == "ok":
                        done[(run["model"], int(run["seed"]))] = run
    if done:
        _say(f"{len(done)} finished seeded run(s) kept from {runs_path}")
    lock = threading.Lock()

    def keep(outcome):
        with lock, open(runs_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(outcome, default=str) + "\n")

    summaries = {}
    with ray_session(getattr(args, "address", None), getattr(args, "num_cpus", None)):
        batch = RayBatch(label="tuned benchmark", **manifest["ray_runs"])
        collector = _Collector(batch, keep)
        for model in models:
            summaries[model] = _search(manifest, model, folder)
            for spec in _seeded_specs(manifest, model, summaries[model]):
                if spec.key not in done:
                    collector.submit(spec)
        fresh = collector.finish()
    runs = list(done.values()) + fresh
    order = {(m, s): i for i, (m, s) in enumerate((m, s) for m in models for s in manifest["seeds"])}
    runs.sort(key=lambda r: order.get((r["model"], int(r["seed"])), len(order)))
    rows = _write_outputs(folder, manifest, summaries, runs, getattr(args, "results", None))
    if all(r.get("status") == "ok" for r in runs) and len(runs) == len(order):
        manifest["status"] = "done"
    else:
        manifest["status"] = "incomplete"
        _say("some seeded runs failed (see the table); run the same command with --resume to run them again.")
    _write_json(os.path.join(folder, MANIFEST), manifest)
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


def _write_outputs(folder, manifest, summaries, runs, results_path):
    from recbole_ssr.benchmark import markdown_table, summarise
    from recbole_ssr.safe_io import atomic_write

    models, seeds = manifest["models"], manifest["seeds"]
    rows = summarise(runs, models)
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
    table = markdown_table(rows, len(seeds)) + "\n\n" + configuration_table(rows, manifest)
    print(f"\n{manifest['dataset']}: each model searched with {manifest['settings']['num_samples']} trials "
          f"({manifest['settings']['search_alg']}, {manifest['settings']['scheduler']}), best configuration run "
          f"with seeds {seeds}; test metrics at the best-valid epoch, mean ± std\n")
    print(table)
    results_path = os.path.abspath(results_path or os.path.join(folder, "results.json"))
    stem = results_path[:-5] if results_path.endswith(".json") else results_path
    _write_json(f"{stem}.json", {"dataset": manifest["dataset"], "models": models, "seeds": seeds,
                                 "settings": manifest["settings"], "overrides": manifest["overrides"],
                                 "benchmark_dir": folder, "summary": rows, "searches": searches, "runs": runs,
                                 "table": table})
    import csv

    with atomic_write(f"{stem}.csv", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten: {stem}.json, {stem}.csv; best configurations: {folder}/<Model>.best.yaml")
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
