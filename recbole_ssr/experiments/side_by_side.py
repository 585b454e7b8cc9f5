"""Side-by-side mode: several models x several seeds on the same split, one table.

    python run_recbole_ssr.py --model=SSR,FREEDOM,LightGCN --dataset=tiktok --seeds=3 --results=bench.json
    python run_recbole_ssr.py --model=mine.py:MyRec,SSR,LightGCN --seeds=3 ...   # your own model beside them

Every (model, seed) run happens in a fresh process (``spawn``): runs cannot leak state into each other, a crash is
contained and reported as *failed* while the others go on, and peak memory is measured per run. Seeds are
``seed, seed+1, ...`` (``seed`` from the configuration, default 999). The split is the dataset's (fixed under the
mmrec protocol; under the recbole protocol RecBole draws it from the seed). Outputs: a markdown table on stdout,
``<results>.json`` (every run and the summary), ``<results>.csv`` (the summary, one row per model) and
``<results>.tex`` (the table for a paper); while the batch runs, every finished run is appended to
``<results>.runs.jsonl`` and its per-user test metrics are added to ``<results>.users.json.gz``. Every model is
tested against the best one (:mod:`recbole_ssr.experiments.tables`, docs/significance.md). Runs made separately
(one ``--results`` file per seed, or an interrupted batch's ``.runs.jsonl``) are merged into the same table and
files, tested the same way from the sidecars beside them, with
``python -m recbole_ssr.benchmark FILE... --results=OUT.json``.
Standard deviations are sample standard deviations (ddof = 1; 0 for one seed).

A batch is **resumable**: ``<results>.runs.jsonl`` is only ever appended to, and running the same command again
reuses every finished run in it whose model, seed and configuration match (:func:`reusable_runs`) and trains only
the missing ones. A lock file ``<results>.lock`` keeps a second batch off the same results path while one runs.
"""

import contextlib
import json
import os
import time

from recbole_ssr.config.configurator import Config, visible_devices_unchanged
from recbole_ssr.core.errors import ConfigError, RecboleSSRError
from recbole_ssr.experiments.run import config_snapshot
from recbole_ssr.core.report import files_to_table_main, load_runs, mean_std, write_csv
from recbole_ssr.experiments.runner import RunSpec, ray_session, run_many
from recbole_ssr.model.registry import model_name
from recbole_ssr.core.safe_io import (append_jsonl, check_appendable_log, check_may_replace, check_may_replace_table,
                                 check_results_name, check_writable_file, exclusive_lock, finite_json, read_jsonl,
                                 rescued, stamped, write_json)
from recbole_ssr.config.search_space import inline_config_files
from recbole_ssr.config.validation import check_output_locations
from recbole_ssr.experiments import tables
from recbole_ssr.training.per_user import sidecar_path

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
KIND = "side-by-side"
#: the summary table's first columns (a CSV starting so is one this module wrote)
TABLE_HEADER = "model,runs_ok,runs_failed"
#: configuration keys that say where or how visibly a run ran, not what it computed: not compared when a finished run
#: is matched for reuse (the data keys are set from the dataset's files; device, gpu and folders by the machine)
RUN_LOCAL_KEYS = frozenset({
    "data_path", "dataset_dir", "load_col", "USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD",
    "benchmark_filename", "checkpoint_dir", "cache_dir", "gpu_id", "device", "show_progress", "state",
    "progress_interval", "worker", "log_wandb", "wandb_project", "per_user_metrics",
})


def summarise(runs, models):
    """One summary row per model: mean/std of the test metrics over its successful seeds."""
    rows = []
    for model in models:
        mine = [r for r in runs if r["model"] == model]
        ok = [r for r in mine if r["status"] == "ok"]
        row = {"model": model, "runs_ok": len(ok), "runs_failed": len(mine) - len(ok)}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([r["test_result"][metric] for r in ok])
            row[f"valid_{metric}_mean"], _ = mean_std([r["best_valid_result"][metric] for r in ok])
        for key in ("best_epoch", "seconds_per_epoch", "epochs_run"):
            row[f"{key}_mean"], _ = mean_std([r[key] for r in ok])
        row["n_params"] = ok[0]["n_params"] if ok else None
        row["peak_rss_mb_max"] = max((r["peak_rss_mb"] for r in ok), default=None)
        row["error"] = next((r["error"] for r in mine if r["status"] != "ok"), "")
        rows.append(row)
    return rows


def results_table(rows, seeds, significance=None):
    """The side-by-side table (markdown) of the summary rows; with the ``significance`` result
    (:func:`recbole_ssr.experiments.tables.significance_against_best`) each model's marker and the legend below."""
    header = ("| model | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 | best epoch | s/epoch | params | peak MB |\n"
              "|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for row in rows:
        if not row["runs_ok"]:
            lines.append(f"| {row['model']} | failed: {row['error'][:80]} | | | | | | | |")
            continue
        cells = [f"{row[f'{m}_mean']:.4f}" + (f" ± {row[f'{m}_std']:.4f}" if row["runs_ok"] > 1 else "")
                 for m in METRICS]  # one run has no standard deviation to show
        note = f" ({row['runs_failed']} of {seeds} seeds failed)" if row["runs_failed"] else ""
        lines.append(f"| {row['model']}{tables.marker(significance, row['model'])}{note} | " + " | ".join(cells)
                     + f" | {row['best_epoch_mean']:.1f} | {row['seconds_per_epoch_mean']:.2f} | {row['n_params']:,}"
                     + f" | {row['peak_rss_mb_max']:.0f} |")
    legend = tables.legend(significance)
    return "\n".join(lines) + (f"\n\n{legend}" if legend else "")


def results_stem(results_path):
    """``bench.json`` -> ``bench`` (the .csv, .runs.jsonl and .lock beside it share it)."""
    return results_path[:-len(".json")] if results_path.endswith(".json") else results_path


def comparable_config(config_dict):
    """A run's configuration as it is compared for reuse: plain JSON values, without :data:`RUN_LOCAL_KEYS`."""
    values = json.loads(json.dumps(finite_json(config_dict), default=str))
    return {k: v for k, v in values.items() if k not in RUN_LOCAL_KEYS}


def reusable_runs(progress_path, wanted):
    """Finished runs of the log ``progress_path`` that a batch can reuse: ``wanted`` maps ``(model, seed)`` to the
    comparable configuration the batch would run; a logged run is reused when it finished (status ok) with the
    same model, seed and comparable configuration (the last such line wins). Returns ``(reused {key: run}, number
    of finished runs of these (model, seed) pairs whose configuration differs)``."""
    if not os.path.isfile(progress_path):
        return {}, 0
    records, _ = read_jsonl(progress_path)
    reused, differing = {}, set()
    for record in records:
        if not isinstance(record, dict) or record.get("status") != "ok" or record.get("seed") is None:
            continue
        key = (record.get("model"), int(record["seed"]))
        if key not in wanted:
            continue
        if comparable_config(record.get("config") or {}) == wanted[key]:
            reused[key] = record
            differing.discard(key)
        elif key not in reused:
            differing.add(key)
    return reused, len(differing)


def check_results_target(results_path, models, dataset, overwrite=False, inputs=None):
    """Everything a side-by-side batch writes, checked before it trains: ``<stem>.json`` (a .json name, writable, not
    a file of another kind/model set/dataset unless ``overwrite``), ``<stem>.csv``, the runs log, ``<stem>.tex`` and
    the per-user sidecar."""
    check_results_name(results_path)
    check_writable_file(results_path, "--results")
    check_may_replace(results_path, KIND, models, dataset, overwrite=overwrite, inputs=inputs)
    stem = results_stem(results_path)
    check_may_replace_table(f"{stem}.csv", TABLE_HEADER, "--results table", overwrite)
    check_appendable_log(f"{stem}.runs.jsonl", "the runs log")
    tables.check_companions(results_path, overwrite)


def run_side_by_side(models, dataset, spec, overrides):
    """Every model with every seed (``spec.seeds``), one table (``spec.results``, default
    ``saved/benchmarks/<dataset>-<time>.json``). With ``spec.address`` the runs are Ray tasks on that cluster
    (``spec.ray_runs`` resources each) instead of local processes. Finished runs of an earlier batch on the same
    results path with the same configuration are reused (module docstring). ``models``: names or specs
    (``/abs/file.py:Class``); the table and results call them by class name. Returns ``(rows, runs)``."""
    with ray_session(spec.address) if spec.address else contextlib.nullcontext():
        return _side_by_side(models, dataset, spec.seeds, spec.config_files, dict(overrides or {}), spec.results,
                             spec.ray_runs if spec.address else None, spec.overwrite)


def _side_by_side(models, dataset, seeds, config_files, overrides, results_path, ray_runs, overwrite):
    overrides.setdefault("per_user_metrics", True)  # for the significance tests of the table
    names = [model_name(m) for m in models]
    if len(set(names)) != len(names):
        twice = sorted({m for m in names if names.count(m) > 1})
        raise ConfigError(f"--model names {', '.join(twice)} more than once; name each model once.")
    base_seed = int(overrides.get("seed", 999))
    results_path = results_path or default_results_path(dataset)
    check_results_target(results_path, names, dataset, overwrite,
                         {path: "a config file (--config_files)" for path in config_files or []})
    paths, resolved = {}, {}
    for model in models:  # a typo or a bad setting fails now, not after hours of runs
        with visible_devices_unchanged():  # a check only: Ray (when used) must see every GPU
            config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=dict(overrides))
        check_output_locations(config)
        # absolute as the driver resolves them: a Ray task runs in a scratch folder, possibly on another node
        paths[model] = {"data_path": config["data_root"], "cache_dir": config["cache_dir"]}
        resolved[model] = comparable_config(config_snapshot(config))
    overrides.pop("seed", None)
    stem = results_stem(results_path)
    progress_path = f"{stem}.runs.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(progress_path)), exist_ok=True)
    specs = []
    for model in models:
        for offset in range(seeds):
            config_dict = dict(overrides, seed=base_seed + offset)
            files = list(config_files or [])
            if ray_runs is not None:  # a task on another node cannot read the driver's files: ship their content
                config_dict, files = {**inline_config_files(files), **config_dict, **paths[model]}, []
            specs.append(RunSpec(model, dataset, base_seed + offset, config_dict, files))
    say = lambda text: print(f"[side-by-side] {text}", flush=True)  # noqa: E731
    with exclusive_lock(f"{stem}.lock", f"--results {results_path}"):
        wanted = {spec.key: dict(resolved[spec.model], seed=int(spec.seed)) for spec in specs}
        reused, differing = reusable_runs(progress_path, wanted)
        todo = [spec for spec in specs if spec.key not in reused]
        if reused or differing:
            say(f"{len(reused)} of {len(specs)} run(s) reused from {progress_path} (same model, seed and configuration)"
                + (f"; {differing} finished run(s) there have another configuration and are not reused" if differing
                   else "") + f"; {len(todo)} to train.")

        finished = []

        def keep(_, outcome):  # appended at once: kept if the batch is interrupted
            users = outcome.pop("per_user", None)  # to the sidecar, never into the log
            try:
                append_jsonl(progress_path, outcome)
            except OSError as exc:  # a full disk: this run's outcome goes to the temporary folder, the batch stops
                raise rescued(outcome, progress_path, exc, "the runs log",
                              f"{len(reused) + sum(finished)} earlier finished run(s) are in the log.") from None
            tables.keep_per_user(progress_path, outcome, users, say, overwrite)
            finished.append(outcome["status"] == "ok")

        try:
            fresh = run_many(todo, on_result=keep, use_ray=ray_runs is not None, **(ray_runs or {}))
        except KeyboardInterrupt:
            say(f"interrupted: {len(reused) + sum(finished)} of {len(specs)} run(s) finished and are kept in "
                f"{progress_path}; run the same command again to train only the rest.")
            raise
        outcomes = dict(reused)
        outcomes.update({spec.key: outcome for spec, outcome in zip(todo, fresh)})
        runs = [outcomes[spec.key] for spec in specs]
        seed_list = [base_seed + i for i in range(seeds)]
        print(f"\n{dataset}, {seeds} seed(s) from {base_seed}: test metrics at the best-valid epoch, mean ± std\n")
        try:
            rows = write_outputs(dataset, names, seed_list, runs, results_path, overwrite=overwrite)
        except OSError as exc:  # a full disk: the table is lost, never the runs
            raise RecboleSSRError(
                f"writing {exc.filename or results_path} failed ({exc.strerror or exc}); every finished run is kept in "
                f"{progress_path}. Once there is space, run the same command again (it reuses them) or merge the log: "
                f"python -m recbole_ssr.experiments.side_by_side {progress_path} --results={results_path}") from None
    return rows, runs


def default_results_path(dataset):
    return os.path.join("saved", "benchmarks", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}.json")


def write_outputs(dataset, models, seeds, runs, results_path=None, sources=None, overwrite=False):
    """Summarise ``runs``, test every model against the best one, print the table, write ``<results>.json``,
    ``<results>.csv``, ``<results>.tex`` and the per-user sidecar; returns the rows. The runs' per-user metrics are
    read from the sidecars beside ``sources`` (the files the runs came from; default: ``results_path``)."""
    results_path = results_path or default_results_path(dataset)
    say = lambda text: print(f"[significance] {text}", flush=True)  # noqa: E731
    rows = summarise(runs, models)
    result, records, why = tables.significance_against_best(
        runs, models, [sidecar_path(p) for p in (sources or [results_path])], say)
    tables.add_columns(rows, result)
    table = results_table(rows, len(seeds), result)
    print(table)
    stem = results_stem(results_path)
    write_json(f"{stem}.json", stamped({"dataset": dataset, "models": models, "seeds": list(seeds),
                                        "summary": rows, "significance": tables.json_field(result, why),
                                        "runs": runs, "table": table}, KIND, models, dataset))
    write_csv(f"{stem}.csv", rows)
    written = tables.write_companions(results_path, rows, result, records, METRICS, len(seeds), dataset,
                                      overwrite=overwrite)
    print(f"\nwritten: {', '.join([f'{stem}.json', f'{stem}.csv'] + written)}")
    return rows


def merge(paths, results_path=None, overwrite=False):
    """The side-by-side table over runs that were made separately (e.g. one ``--results`` file per seed), tested for
    significance from the per-user sidecars beside ``paths``."""

    runs = load_runs(paths)
    if not runs:
        raise RecboleSSRError(f"no run in {', '.join(paths)}: nothing to merge.")
    datasets = sorted({str(r.get("dataset")) for r in runs})
    if len(datasets) != 1:
        raise RecboleSSRError(f"the files hold runs of several datasets ({', '.join(datasets)}); merge one at a time.")
    models = list(dict.fromkeys(r["model"] for r in runs))
    if results_path is not None:
        check_results_name(results_path)
        check_writable_file(results_path, "--results")
        check_may_replace(results_path, KIND, models, datasets[0], overwrite=overwrite,
                          inputs={path: "an input file of the merge" for path in paths})
        check_may_replace_table(f"{results_stem(results_path)}.csv", TABLE_HEADER, "--results table", overwrite)
        tables.check_companions(results_path, overwrite)
    seeds = sorted({r["seed"] for r in runs if r.get("seed") is not None})
    print(f"\n{datasets[0]}, {len(runs)} run(s) from {len(paths)} file(s), seeds {seeds}: test metrics at the "
          "best-valid epoch, mean ± std\n")
    return write_outputs(datasets[0], models, seeds, runs, results_path, sources=paths, overwrite=overwrite)


def main(argv=None):
    """``python -m recbole_ssr.experiments.side_by_side RESULT.json ... [--results=OUT.json]``: merge separate runs into one table."""
    return files_to_table_main("python -m recbole_ssr.experiments.side_by_side", main.__doc__,
                               "results JSON files (--results output, side-by-side JSON) or runs.jsonl", merge, argv)


if __name__ == "__main__":
    raise SystemExit(main())
