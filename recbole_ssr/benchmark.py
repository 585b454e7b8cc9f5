"""Side-by-side mode: several models x several seeds on the same split, one table.

    python run_recbole_ssr.py --model=SSR,FREEDOM,LightGCN --dataset=tiktok --seeds=3 --results=bench.json

Every (model, seed) run happens in a fresh process (``spawn``): runs cannot leak state into each other, a crash is
contained and reported as *failed* while the others go on, and peak memory is measured per run. Seeds are
``seed, seed+1, ...`` (``seed`` from the configuration, default 999). The split is the dataset's (fixed under the
mmrec protocol; under the recbole protocol RecBole draws it from the seed). Outputs: a markdown table on stdout,
``<results>.json`` (every run and the summary) and ``<results>.csv`` (the summary, one row per model).
Standard deviations are sample standard deviations (ddof = 1; 0 for one seed).
"""

import csv
import math
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

from recbole_ssr.quick_start import write_json

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def _run_one(model, dataset, config_files, config_dict):
    """Runs in a child process; returns the outcome or the error (never raises)."""
    try:
        from recbole_ssr.quick_start import run

        outcome = run(model, dataset, config_files, config_dict)
        return {"status": "ok", **outcome}
    except Exception as exc:  # reported in the table; the other runs go on
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def run_isolated(model, dataset, config_files, config_dict):
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_run_one, model, dataset, config_files, config_dict).result()
        except Exception as exc:  # the child died (e.g. killed for memory)
            return {"status": "failed", "error": f"worker process died: {type(exc).__name__}: {exc}"}


def mean_std(values):
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


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


def markdown_table(rows, seeds):
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


def run_side_by_side(models, dataset, seeds, config_files=None, overrides=None, results_path=None):
    from recbole_ssr.utils import get_model

    for model in models:  # a typo fails fast, before hours of runs
        get_model(model)
    overrides = dict(overrides or {})
    base_seed = int(overrides.pop("seed", 999))
    runs = []
    for model in models:
        for offset in range(seeds):
            seed = base_seed + offset
            started = time.time()
            print(f"[side-by-side] {model} seed {seed} ...", flush=True)
            outcome = run_isolated(model, dataset, config_files, dict(overrides, seed=seed))
            outcome.update(model=model, seed=seed, wall_seconds=round(time.time() - started, 1))
            status = outcome["status"] if outcome["status"] == "ok" else f"FAILED ({outcome['error']})"
            print(f"[side-by-side] {model} seed {seed}: {status}", flush=True)
            runs.append(outcome)
    rows = summarise(runs, models)
    table = markdown_table(rows, seeds)
    print(f"\n{dataset}, {seeds} seed(s) from {base_seed}: test metrics at the best-valid epoch, mean ± std\n")
    print(table)
    if results_path is None:
        results_path = os.path.join("saved", "benchmarks", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    stem = results_path[:-5] if results_path.endswith(".json") else results_path
    write_json(f"{stem}.json", {"dataset": dataset, "models": models, "seeds": [base_seed + i for i in range(seeds)],
                                "summary": rows, "runs": runs, "table": table})
    with open(f"{stem}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwritten: {stem}.json, {stem}.csv")
    return rows, runs
