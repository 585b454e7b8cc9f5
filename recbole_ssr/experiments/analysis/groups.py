"""``--analysis=groups``: test metrics per user training-degree bucket and for cold-start items, any models, mean ±
std over seeds. Every run already records its groups (:mod:`recbole_ssr.training.evaluation`, computed by the trainer), so
this analysis only runs (or reads, ``--analysis_from``) the runs and tabulates them."""

import os

import numpy as np

from recbole_ssr.experiments.analysis import common, plots
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.training.evaluation import group_names
from recbole_ssr.core.report import load_runs, markdown_table, write_csv
from recbole_ssr.model.registry import model_name


def runs_from_files(paths, models, dataset):
    """Finished runs of ``models`` on ``dataset`` read from results files (``--analysis_from``), no training."""
    models = [model_name(m) for m in models]
    runs, without_groups = [], []
    for run in load_runs(paths):
        if run.get("dataset") not in (None, dataset):
            raise ConfigError(f"--analysis_from: a run of {run['model']} is on dataset '{run.get('dataset')}', "
                              f"not '{dataset}'; pass the files of one dataset.")
        if run["model"] not in models:
            continue
        if run["status"] == "ok" and not run.get("groups"):  # made by a version without group metrics
            without_groups.append(f"{run['model']} seed {run.get('seed')}")
            continue
        runs.append(dict(run, label="default"))
    if without_groups:
        print(f"[analysis] --analysis_from: {len(without_groups)} run(s) have no group metrics (key 'groups') and "
              f"are left out: {', '.join(without_groups)}", flush=True)
    if not any(run["status"] == "ok" for run in runs):
        raise ConfigError(f"--analysis_from: no finished run of {', '.join(models)} with group metrics in "
                          f"{', '.join(paths)} ({len(runs)} failed run(s)); pass the results of finished runs, or leave "
                          "--analysis_from out to train them.")
    return runs, without_groups


def run_groups(models, dataset, spec, overrides, settings):
    """Every model x seed; tables of the metrics per group (mean ± std over seeds), CSV, JSON, a bar chart.
    Returns the output folder."""
    metric = settings["analysis_metric"]
    folder = common.start(spec, "groups", dataset)
    if spec.analysis_from:
        runs, without_groups = runs_from_files(spec.analysis_from, models, dataset)
    else:
        without_groups = []
        runs = common.run_grid([(model, "default", {}) for model in models], dataset, spec, overrides, settings,
                               progress_path=os.path.join(folder, "runs.jsonl"))
    models = [model_name(m) for m in models]  # the table calls your own models by class name
    rows = []
    for run in runs:
        if run["status"] != "ok":
            continue
        for name, entry in group_names(run.get("groups")):
            rows.append({"model": run["model"], "seed": run["seed"], "group": name, **entry})
    group_order = list(dict.fromkeys(row["group"] for row in rows))
    summary = common.summarise(rows, ("model", "group"), common.metric_keys(rows))
    n_users = {(r["model"], r["group"]): r["n_users"] for r in rows}

    table_rows = []
    for model in models:
        cells = [model]
        for group in group_order:
            cells.append(common.fmt_mean_std(summary.get((model, group), {}).get(metric)))
        table_rows.append(cells)
    count_row = ["users"] + [str(n_users.get((models[0], g), "")) for g in group_order]
    metric_table = markdown_table(["model"] + group_order, table_rows + [count_row])
    detail = common.summary_table(summary, ("model", "group"), common.metric_keys(rows))

    write_csv(os.path.join(folder, "groups.csv"), rows)
    write_csv(os.path.join(folder, "groups_summary.csv"), common.summary_rows(summary, ("model", "group")))
    chart = os.path.join(folder, f"groups_{common.slug(metric)}.png")
    plots.grouped_bars(chart, group_order,
                       {m: [summary.get((m, g), {}).get(metric, (np.nan, np.nan)) for g in group_order]
                        for m in models},
                       ylabel=metric, title=f"{dataset}: {metric} per group (test)")
    report = [f"# Group evaluation: {dataset}", "",
              common.describe_runs(runs, overrides)
              + (f" Runs read from {', '.join(spec.analysis_from)} (no training)."
                 if spec.analysis_from else "")
              + (f" Left out for lack of group metrics: {', '.join(without_groups)}." if without_groups else ""), "",
              f"## {metric} per group (mean ± std over seeds; last row: evaluated users)", "", metric_table, "",
              "## Every metric", "", detail, "", f"![{metric} per group]({os.path.basename(chart)})", "",
              common.GROUP_DEFINITIONS]
    common.write_report(folder, "groups", report, {"summary": common.summary_rows(summary, ("model", "group")),
                                                   "runs": runs}, spec.results,
                        models, dataset)
    print(f"\n{dataset}: {metric} per group, mean ± std over seeds\n\n{metric_table}")
    return folder
