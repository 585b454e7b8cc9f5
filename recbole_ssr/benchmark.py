"""Side-by-side mode: several models x several seeds on the same split, one table.

    python run_recbole_ssr.py --model=SSR,FREEDOM,LightGCN --dataset=tiktok --seeds=3 --results=bench.json

Every (model, seed) run happens in a fresh process (``spawn``): runs cannot leak state into each other, a crash is
contained and reported as *failed* while the others go on, and peak memory is measured per run. Seeds are
``seed, seed+1, ...`` (``seed`` from the configuration, default 999). The split is the dataset's (fixed under the
mmrec protocol; under the recbole protocol RecBole draws it from the seed). Outputs: a markdown table on stdout,
``<results>.json`` (every run and the summary) and ``<results>.csv`` (the summary, one row per model); while the
batch runs, every finished run is appended to ``<results>.runs.jsonl``. Runs made separately (one ``--results``
file per seed, or an interrupted batch's ``.runs.jsonl``) are merged into the same table and files with
``python -m recbole_ssr.benchmark FILE... --results=OUT.json``.
Standard deviations are sample standard deviations (ddof = 1; 0 for one seed).
"""

import os
import time

from recbole_ssr.config import Config, visible_devices_unchanged
from recbole_ssr.errors import RecboleSSRError
from recbole_ssr.report import append_jsonl, files_to_table_main, load_runs, mean_std, write_csv
from recbole_ssr.runner import RunSpec, run_many
from recbole_ssr.safe_io import check_writable_file, write_json
from recbole_ssr.search_space import inline_config_files
from recbole_ssr.validation import check_output_locations

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


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


def results_table(rows, seeds):
    """The side-by-side table (markdown) of the summary rows."""
    header = ("| model | Recall@10 | Recall@20 | NDCG@10 | NDCG@20 | best epoch | s/epoch | params | peak MB |\n"
              "|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for row in rows:
        if not row["runs_ok"]:
            lines.append(f"| {row['model']} | failed: {row['error'][:80]} | | | | | | | |")
            continue
        cells = [f"{row[f'{m}_mean']:.4f} ± {row[f'{m}_std']:.4f}" for m in METRICS]
        note = f" ({row['runs_failed']} of {seeds} seeds failed)" if row["runs_failed"] else ""
        lines.append(f"| {row['model']}{note} | " + " | ".join(cells)
                     + f" | {row['best_epoch_mean']:.1f} | {row['seconds_per_epoch_mean']:.2f} | {row['n_params']:,}"
                     + f" | {row['peak_rss_mb_max']:.0f} |")
    return "\n".join(lines)


def run_side_by_side(models, dataset, seeds, config_files=None, overrides=None, results_path=None, ray_runs=None):
    """Every model with every seed, one table. ``ray_runs`` (``{"cpus_per_run": c, "gpus_per_run": g}``): the runs
    are Ray tasks of the current Ray session (``--address``) instead of local processes."""
    overrides = dict(overrides or {})
    paths = {}
    for model in models:  # a typo or a bad setting fails now, not after hours of runs
        with visible_devices_unchanged():  # a check only: Ray (when used) must see every GPU
            config = Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=dict(overrides))
        check_output_locations(config)
        # absolute as the driver resolves them: a Ray task runs in a scratch folder, possibly on another node
        paths[model] = {"data_path": config["data_root"], "cache_dir": config["cache_dir"]}
    base_seed = int(overrides.pop("seed", 999))
    results_path = results_path or default_results_path(dataset)
    check_writable_file(results_path, "--results")
    progress_path = (results_path[:-5] if results_path.endswith(".json") else results_path) + ".runs.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(progress_path)), exist_ok=True)
    open(progress_path, "w").close()
    specs = []
    for model in models:
        for offset in range(seeds):
            config_dict = dict(overrides, seed=base_seed + offset)
            files = list(config_files or [])
            if ray_runs is not None:  # a task on another node cannot read the driver's files: ship their content
                config_dict, files = {**inline_config_files(files), **config_dict, **paths[model]}, []
            specs.append(RunSpec(model, dataset, base_seed + offset, config_dict, files))

    def keep(_, outcome):  # kept if the batch is interrupted
        append_jsonl(progress_path, outcome)

    runs = run_many(specs, on_result=keep, use_ray=ray_runs is not None, **(ray_runs or {}))
    seed_list = [base_seed + i for i in range(seeds)]
    print(f"\n{dataset}, {seeds} seed(s) from {base_seed}: test metrics at the best-valid epoch, mean ± std\n")
    rows = write_outputs(dataset, models, seed_list, runs, results_path)
    return rows, runs


def default_results_path(dataset):
    return os.path.join("saved", "benchmarks", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}.json")


def write_outputs(dataset, models, seeds, runs, results_path=None):
    """Summarise ``runs``, print the table, write ``<results>.json`` and ``<results>.csv``; returns the rows."""
    rows = summarise(runs, models)
    table = results_table(rows, len(seeds))
    print(table)
    results_path = results_path or default_results_path(dataset)
    stem = results_path[:-5] if results_path.endswith(".json") else results_path
    write_json(f"{stem}.json", {"dataset": dataset, "models": models, "seeds": list(seeds),
                                "summary": rows, "runs": runs, "table": table})
    write_csv(f"{stem}.csv", rows)
    print(f"\nwritten: {stem}.json, {stem}.csv")
    return rows


def merge(paths, results_path=None):
    """The side-by-side table over runs that were made separately (e.g. one ``--results`` file per seed)."""

    runs = load_runs(paths)
    datasets = sorted({str(r.get("dataset")) for r in runs})
    if len(datasets) != 1:
        raise RecboleSSRError(f"the files hold runs of several datasets ({', '.join(datasets)}); merge one at a time.")
    models = list(dict.fromkeys(r["model"] for r in runs))
    seeds = sorted({r["seed"] for r in runs if r.get("seed") is not None})
    print(f"\n{datasets[0]}, {len(runs)} run(s) from {len(paths)} file(s), seeds {seeds}: test metrics at the "
          "best-valid epoch, mean ± std\n")
    return write_outputs(datasets[0], models, seeds, runs, results_path)


def main(argv=None):
    """``python -m recbole_ssr.benchmark RESULT.json ... [--results=OUT.json]``: merge separate runs into one table."""
    return files_to_table_main("python -m recbole_ssr.benchmark", main.__doc__,
                               "results JSON files (--results output, side-by-side JSON) or runs.jsonl", merge, argv)


if __name__ == "__main__":
    raise SystemExit(main())
