"""Shared pieces of the analyses: settings, output folder, running configurations x seeds, tables, reports."""

import json
import math
import os

from recbole_ssr.config.configurator import Config
from recbole_ssr.core.errors import ConfigError, yaml_error_text
from recbole_ssr.training.evaluation import analysis_defaults, check_bounds
from recbole_ssr.core.report import markdown_table, mean_std, plain
from recbole_ssr.experiments.runner import RunSpec, run_many
from recbole_ssr.core.safe_io import append_jsonl, atomic_write, new_stamped_folder, stamped, write_json
from recbole_ssr.model.registry import model_name
#: settings that are also configuration keys of every run (kept in the run overrides)
RUN_KEYS = ("group_degree_bounds",)

GROUP_DEFINITIONS = (
    "Groups: `users <=b` etc. bucket the evaluated users by their number of training interactions "
    "(`group_degree_bounds`; `<=5` = the paper's cold-start users); `cold items`: users with a test item that has no "
    "training interaction, scored on those items only, ranked among all items; `cold items (among cold)`: the same, "
    "ranked among the cold items only. Test set, best-valid checkpoint.")


def load_settings(overrides, config_files=None):
    """The analysis defaults, each replaced by the same key in a ``--config_files`` yaml, then by a ``--key=value``.
    Analysis-only keys are removed from ``overrides`` (they are not configuration keys of the runs);
    ``group_degree_bounds`` stays in both."""
    import yaml

    settings = analysis_defaults()
    for path in config_files or []:
        try:
            with open(path, "r", encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except OSError as exc:
            raise ConfigError(f"config file {path} (from --config_files) cannot be read ({exc.strerror}).") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} (from --config_files) is not valid YAML ({yaml_error_text(exc)}). "
                              "Fix the syntax (one 'key: value' per line).") from None
        if isinstance(loaded, dict):
            settings.update({k: v for k, v in loaded.items() if k in settings})
    for key in list(settings):
        if key in overrides:
            settings[key] = overrides[key] if key in RUN_KEYS else overrides.pop(key)
    if not isinstance(settings.get("ablation_variants"), dict) or not all(
            isinstance(v, dict) for v in settings["ablation_variants"].values()):
        raise ConfigError("ablation_variants must map variant names to configuration overrides, e.g. "
                          "{'full': {}, 'no_gating': {'use_gate': False}}.")
    grid = settings.get("sensitivity_grid")
    if not isinstance(grid, dict) or not all(isinstance(v, (list, tuple)) and v for v in grid.values()):
        raise ConfigError("sensitivity_grid must map configuration keys to non-empty lists of values, e.g. "
                          "{'band_num': [1, 2, 3, 4]}.")
    settings["group_degree_bounds"] = check_bounds(settings["group_degree_bounds"])
    settings["analysis_metric"] = str(settings["analysis_metric"]).lower()
    return settings


def check_metric(settings, model, dataset, config_files, overrides):
    """``analysis_metric`` must be one of the configured top-k metrics (fails before any training)."""
    config = model_config(model, dataset, config_files, overrides)
    topk = config["topk"] if isinstance(config["topk"], (list, tuple)) else [config["topk"]]
    available = [f"{m.lower()}@{k}" for m in config["metrics"] for k in topk]
    if settings["analysis_metric"] not in available:
        raise ConfigError(f"analysis_metric '{settings['analysis_metric']}' is not computed: the runs' metrics/topk "
                          f"give {', '.join(available)}. Pick one of them or change metrics/topk.")


def output_folder(spec, analysis, dataset):
    """A new ``<analysis_output>/<analysis>-<dataset>-<timestamp>`` folder (default root ``analysis_results/``)."""
    return new_stamped_folder(os.path.abspath(spec.analysis_output or "analysis_results"), f"{analysis}-{dataset}",
                              "analysis folder")


def by_name(plans, models):
    """``(plans, models)`` keyed by what tables call the models (the class name of your own ``file.py:Class``),
    once the runs are planned with the models' specs."""
    return {model_name(m): p for m, p in plans.items()}, [model_name(m) for m in models]


def plan(models, plan_one, nothing):
    """``{model: (planned, skipped)}`` of every model; a :class:`ConfigError` saying ``nothing`` when no model has
    anything to run (before the output folder is created)."""
    plans = {model: plan_one(model) for model in models}
    if not any(planned for planned, _ in plans.values()):
        raise ConfigError(nothing)
    return plans


def start(spec, analysis, dataset):
    """Create and announce the output folder (after the analysis has validated its inputs)."""
    folder = output_folder(spec, analysis, dataset)
    print(f"[analysis] {analysis} on {dataset}: output folder {folder}", flush=True)
    return folder


def base_seed(overrides):
    return int(overrides.pop("seed", 999))


def model_config(model, dataset, config_files, overrides):
    """The final configuration a run of ``model`` would get (no data is loaded)."""
    return Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=dict(overrides))


def run_grid(configs, dataset, spec, overrides, settings, on_result=None, progress_path=None):
    """Train every ``(model, label, extra_overrides)`` with every seed (``seed, seed+1, ...``); returns the runs
    (each run's outcome plus ``label``, ``seed``, ``status``). Identical configurations are run once.
    ``analysis_isolated``: each run in a fresh process (as side-by-side mode), else in this process
    (:func:`recbole_ssr.experiments.runner.run_many`). ``progress_path``: each finished run is appended there as one JSON line,
    so a long analysis that is interrupted keeps the runs it finished."""
    overrides = dict(overrides)
    seed0 = base_seed(overrides)
    seeds = [seed0 + i for i in range(max(1, int(spec.seeds or 1)))]
    specs, users, index_of = [], [], {}  # users[i]: the (model, label, seed, extra) rows that share specs[i]
    order = []  # (spec index, model, label, seed, extra) in table order
    for model, label, extra in configs:
        for seed in seeds:
            config_dict = dict(overrides, **extra, seed=seed)
            key = json.dumps([model, config_dict], sort_keys=True, default=str)
            if key not in index_of:
                index_of[key] = len(specs)
                specs.append(RunSpec(model, dataset, seed, config_dict, list(spec.config_files or []), label=label))
                users.append([])
            users[index_of[key]].append((model, label, seed, extra))
            order.append((index_of[key], model, label, seed, extra))
    runs = {}

    def finished(index, outcome):
        for model, label, seed, extra in users[index]:
            run = dict(outcome, model=model_name(model), label=label, seed=seed, overrides=extra)
            runs[(index, model, label, seed)] = run
            if progress_path is not None:
                append_jsonl(progress_path, run)
            if on_result is not None:
                on_result(run)

    run_many(specs, on_result=finished, isolated=settings.get("analysis_isolated", True), label="analysis")
    return [runs[(index, model, label, seed)] for index, model, label, seed, _ in order]


# ---------------------------------------------------------------------------------------------------------------
# aggregation and tables
# ---------------------------------------------------------------------------------------------------------------
def metric_keys(rows):
    """Metric columns (``name@k``) present in ``rows``, in first-seen order."""
    return list(dict.fromkeys(k for row in rows for k in row if "@" in k))


def summarise(rows, by, values):
    """{key tuple of ``by``: {value: (mean, std)} over the rows (e.g. seeds)} in first-seen order."""
    grouped = {}
    for row in rows:
        grouped.setdefault(tuple(row[b] for b in by), []).append(row)
    return {key: {v: mean_std([r.get(v) for r in items]) for v in values} | {"n": len(items)}
            for key, items in grouped.items()}


def summary_rows(summary, by):
    rows = []
    for key, stats in summary.items():
        row = dict(zip(by, key))
        for name, value in stats.items():
            if isinstance(value, tuple):
                row[f"{name}_mean"], row[f"{name}_std"] = value
            else:
                row[name] = value
        rows.append(row)
    return rows


def fmt_mean_std(value, digits=4):
    if value is None:
        return ""
    mean, std = value
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_change(value, reference):
    """Relative change of ``value`` against ``reference`` (both (mean, std)), in percent."""
    if not value or not reference or math.isnan(value[0]) or math.isnan(reference[0]) or reference[0] == 0:
        return "–"
    return f"{100.0 * (value[0] - reference[0]) / reference[0]:+.1f}%"


def summary_table(summary, by, values):
    rows = [list(key) + [fmt_mean_std(stats.get(v)) for v in values] + [stats["n"]]
            for key, stats in summary.items()]
    return markdown_table(list(by) + list(values) + ["runs"], rows)


def slug(text):
    return "".join(c if c.isalnum() else "_" for c in str(text)).strip("_")


def cold_user_bucket(groups):
    """(label, entry) of the lowest-degree user bucket (the paper's cold-start users by default)."""
    if not groups or not groups.get("user_degree"):
        return None
    return next(iter(groups["user_degree"].items()))


def result_row(run, keys, n_params=False):
    """One table row of a finished run: ``keys``, its test metrics, those of its cold-start user bucket
    (``users <=b <metric>``), best epoch and seconds per epoch (and its parameter count with ``n_params``)."""
    row = dict(keys, **run["test_result"])
    cold = cold_user_bucket(run.get("groups"))
    if cold is not None:
        label, entry = cold
        row.update({f"users {label} {k}": v for k, v in entry.items() if "@" in k})
    row.update(best_epoch=run.get("best_epoch"), seconds_per_epoch=run.get("seconds_per_epoch"))
    if n_params:
        row["n_params"] = run.get("n_params")
    return row


def describe_runs(runs, overrides):
    ok = sum(r["status"] == "ok" for r in runs)
    seeds = sorted({r["seed"] for r in runs})
    extra = ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "none"
    failed = [f"{r['model']} {r['label']} seed {r['seed']}: {r.get('error', '')[:200]}" for r in runs
              if r["status"] != "ok"]
    text = f"{ok} of {len(runs)} runs succeeded; seeds {seeds}; command-line overrides: {extra}."
    if failed:
        text += "\n\nFailed runs:\n" + "\n".join(f"- {f}" for f in failed)
    return text


def write_report(folder, name, lines, payload, results=None, models=(), dataset=None):
    """``<name>.md`` and ``<name>.json`` in ``folder`` (+ the ``results`` JSON, marked as this analysis of ``models``
    on ``dataset``); prints where they are."""
    report = os.path.join(folder, f"{name}.md")
    with atomic_write(report) as f:
        f.write("\n".join(lines).rstrip() + "\n")
    payload = stamped(plain(dict(payload, analysis=name, output_dir=folder)), f"{name} analysis", models, dataset)
    write_json(os.path.join(folder, f"{name}.json"), payload)
    if results:
        write_json(results, payload)
    print(f"\n[analysis] {name}: tables, plots and report written to {folder}", flush=True)
    return report
