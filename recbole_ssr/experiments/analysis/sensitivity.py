"""``--analysis=sensitivity``: one-at-a-time sweeps of hyper-parameters around the configuration.

``sensitivity_grid`` (``properties/analysis/defaults.yaml``, or ``--sensitivity_grid="{'band_num': [2, 3, 4]}"``)
maps a configuration key to its values; every other key keeps its configured value (model yaml < config files <
``--key=value``). The configured value of each key is marked ``*``. Identical configurations (e.g. the configured
point that appears in every sweep) are trained once per seed. Keys the model's configuration lacks are skipped.

Output: ``sensitivity.md`` (one table per key: test metrics mean ± std, the cold-start-user bucket),
``sensitivity.csv`` (per run), ``sensitivity_summary.csv``, ``sensitivity.json``, ``sensitivity_<key>.png`` (the
analysis metric overall and for the cold-start users against the value, error bars = std over seeds) and
``sensitivity.png`` (all keys, one panel each).
"""

import os

from recbole_ssr.experiments.analysis import common, plots
from recbole_ssr.core.report import markdown_table, write_csv


def plan_sweeps(model, dataset, spec, overrides, settings):
    """({key: (configured value, [values])}, [(key, reason)] skipped) for one model."""
    config = common.model_config(model, dataset, spec.config_files, overrides)
    sweeps, skipped = {}, []
    for key, values in settings["sensitivity_grid"].items():
        if key not in config:
            skipped.append((key, f"{config['model']} has no configuration key {key}"))
        else:
            sweeps[key] = (config[key], list(values))
    return sweeps, skipped


def run_sensitivity(models, dataset, spec, overrides, settings):
    metric = settings["analysis_metric"]
    plans = common.plan(models, lambda model: plan_sweeps(model, dataset, spec, overrides, settings),
                        "no key of sensitivity_grid is a configuration key of the given model(s).")
    folder = common.start(spec, "sensitivity", dataset)
    configs, points = [], {}
    for model in models:
        for key, (configured, values) in plans[model][0].items():
            for value in values:
                label = f"{key}={value!r}"
                points[label] = (key, value)
                # the configured point runs without an override, so every sweep shares its runs
                configs.append((model, label, {} if _equal(value, configured) else {key: value}))
    runs = common.run_grid(configs, dataset, spec, overrides, settings,
                           progress_path=os.path.join(folder, "runs.jsonl"))
    plans, models = common.by_name(plans, models)

    rows = []
    for run in runs:
        if run["status"] == "ok":
            key, value = points[run["label"]]
            rows.append(common.result_row(run, {"model": run["model"], "key": key, "value": value, "seed": run["seed"]}))
    values = common.metric_keys(rows)
    for row in rows:
        row["value_key"] = repr(row["value"])  # hashable, keeps 0.1 and '0.1' apart
    summary = common.summarise(rows, ("model", "key", "value_key"), values)
    cold_metric = next((k for k in values if k.startswith("users ") and k.endswith(f" {metric}")), None)
    shown = [k for k in values if not k.startswith("users ")] + ([cold_metric] if cold_metric else [])

    report = [f"# Sensitivity: {dataset}", "", common.describe_runs(runs, overrides), "",
              "One key varied at a time, every other key at its configured value (marked *). Test metrics of the "
              "best-valid checkpoint, mean ± std over seeds.", ""]
    panels, printed = {}, []
    for model in models:
        for key, (configured, sweep) in plans[model][0].items():
            table_rows, overall, cold = [], [], []
            for value in sweep:
                stats = summary.get((model, key, repr(value)))
                mark = " *" if _equal(value, configured) else ""
                if stats is None:
                    table_rows.append([f"{value}{mark}", "failed"] + [""] * len(shown))
                    overall.append(None)
                    cold.append(None)
                    continue
                table_rows.append([f"{value}{mark}"] + [common.fmt_mean_std(stats.get(k)) for k in shown]
                                  + [stats["n"]])
                overall.append(stats.get(metric))
                cold.append(stats.get(cold_metric) if cold_metric else None)
            table = markdown_table([key] + shown + ["runs"], table_rows)
            title = key if len(models) == 1 else f"{model}: {key}"
            series = {"all users": overall}
            if cold_metric:
                series[cold_metric.rsplit(" ", 1)[0]] = cold
            chart = os.path.join(folder, f"sensitivity_{common.slug(title)}.png")
            plots.lines(chart, {title: (sweep, series)}, xlabel=key, ylabel=metric, categorical_x=True)
            panels[title] = (sweep, series)
            report += [f"## {title}", "", table, "", f"![{title}]({os.path.basename(chart)})", ""]
            printed.append(f"{title}\n\n{table}\n")
        for key, reason in plans[model][1]:
            report.append(f"- skipped `{key}`: {reason}")
    plots.lines(os.path.join(folder, "sensitivity.png"), panels, ylabel=metric, categorical_x=True,
                title=f"{dataset}: sensitivity ({metric}, test)")
    report += ["", "![all sweeps](sensitivity.png)", "", common.GROUP_DEFINITIONS]
    write_csv(os.path.join(folder, "sensitivity.csv"), rows)
    write_csv(os.path.join(folder, "sensitivity_summary.csv"),
                     common.summary_rows(summary, ("model", "key", "value")))
    common.write_report(folder, "sensitivity", report,
                        {"summary": common.summary_rows(summary, ("model", "key", "value")), "runs": runs}, spec.results,
                        models, dataset)
    print(f"\n{dataset}: sensitivity, test metrics mean ± std over seeds\n\n" + "\n".join(printed))
    return folder


def _equal(a, b):
    try:
        return a == b or float(a) == float(b)
    except (TypeError, ValueError):
        return False
