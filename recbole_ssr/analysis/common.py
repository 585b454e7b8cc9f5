"""Shared pieces of the analyses: settings, output folder, running configurations x seeds, tables, reports."""

import csv
import json
import math
import os
import time

from recbole_ssr.errors import ConfigError, yaml_error_text

DEFAULTS_FILE = os.path.join("analysis", "defaults.yaml")
#: settings that are also configuration keys of every run (kept in the run overrides)
RUN_KEYS = ("group_degree_bounds",)

GROUP_DEFINITIONS = (
    "Groups: `users <=b` etc. bucket the evaluated users by their number of training interactions "
    "(`group_degree_bounds`; `<=5` = the paper's cold-start users); `cold items`: users with a test item that has no "
    "training interaction, scored on those items only, ranked among all items; `cold items (among cold)`: the same, "
    "ranked among the cold items only. Test set, best-valid checkpoint.")


def load_defaults():
    """``properties/analysis/defaults.yaml`` as a dict."""
    import yaml

    from recbole_ssr.paths import properties_dir

    path = os.path.join(properties_dir(), DEFAULTS_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"the analysis settings file {path} is missing; restore properties/{DEFAULTS_FILE} "
                          "from the source tree.")
    with open(path, "r", encoding="utf-8") as f:
        loaded = yaml.safe_load(f) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must be a yaml mapping of settings.")
    return loaded


def load_settings(overrides, config_files=None):
    """The analysis defaults, each replaced by the same key in a ``--config_files`` yaml, then by a ``--key=value``.
    Analysis-only keys are removed from ``overrides`` (they are not configuration keys of the runs);
    ``group_degree_bounds`` stays in both."""
    import yaml

    settings = load_defaults()
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
    from recbole_ssr.analysis.groups import check_bounds

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


def output_folder(args, analysis, dataset):
    """A new ``<analysis_output>/<analysis>-<dataset>-<timestamp>`` folder (default root ``analysis_results/``)."""
    root = os.path.abspath(getattr(args, "analysis_output", None) or "analysis_results")
    stem = os.path.join(root, f"{analysis}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    folder, n = stem, 1
    while os.path.exists(folder):
        n += 1
        folder = f"{stem}-{n}"
    os.makedirs(folder)
    return folder


def start(args, analysis, dataset):
    """Create and announce the output folder (after the analysis has validated its inputs)."""
    folder = output_folder(args, analysis, dataset)
    print(f"[analysis] {analysis} on {dataset}: output folder {folder}", flush=True)
    return folder


def base_seed(overrides):
    return int(overrides.pop("seed", 999))


def model_config(model, dataset, config_files, overrides):
    """The final configuration a run of ``model`` would get (no data is loaded)."""
    from recbole_ssr.config import Config

    return Config(model=model, dataset=dataset, config_file_list=config_files, config_dict=dict(overrides))


def run_grid(configs, dataset, args, overrides, settings, on_result=None, progress_path=None):
    """Train every ``(model, label, extra_overrides)`` with every seed (``seed, seed+1, ...``); returns the runs
    (each run's outcome plus ``label``, ``seed``, ``status``). Identical configurations are run once.
    ``analysis_isolated``: each run in a fresh process (as side-by-side mode), else in this process.
    ``progress_path``: each finished run is appended there as one JSON line, so a long analysis that is
    interrupted keeps the runs it finished."""
    from recbole_ssr.runner import run_in_process, run_isolated

    overrides = dict(overrides)
    seed0 = base_seed(overrides)
    seeds = [seed0 + i for i in range(max(1, int(getattr(args, "seeds", 1) or 1)))]
    runner = run_isolated if settings.get("analysis_isolated", True) else run_in_process
    done, runs = {}, []
    for model, label, extra in configs:
        for seed in seeds:
            config_dict = dict(overrides, **extra, seed=seed)
            key = json.dumps([model, config_dict], sort_keys=True, default=str)
            if key not in done:
                started = time.time()
                print(f"[analysis] {model} {label} seed {seed} ...", flush=True)
                outcome = runner(model, dataset, getattr(args, "config_files", None), config_dict)
                outcome["wall_seconds"] = round(time.time() - started, 1)
                status = outcome["status"] if outcome["status"] == "ok" else f"FAILED ({outcome['error']})"
                print(f"[analysis] {model} {label} seed {seed}: {status}", flush=True)
                done[key] = outcome
            run = dict(done[key], model=model, label=label, seed=seed, overrides=extra)
            runs.append(run)
            if progress_path is not None:
                with open(progress_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(run, default=str) + "\n")
            if on_result is not None:
                on_result(run)
    return runs


# ---------------------------------------------------------------------------------------------------------------
# aggregation and tables
# ---------------------------------------------------------------------------------------------------------------
def mean_std(values):
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return (math.nan, math.nan)
    mean = sum(values) / len(values)
    if len(values) == 1:
        return (mean, 0.0)
    return (mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)))


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


def markdown_table(header, rows):
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(summary, by, values):
    rows = [list(key) + [fmt_mean_std(stats.get(v)) for v in values] + [stats["n"]]
            for key, stats in summary.items()]
    return markdown_table(list(by) + list(values) + ["runs"], rows)


def write_csv(path, rows):
    from recbole_ssr.safe_io import atomic_write

    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or ["empty"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _cell(value):
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return value


def slug(text):
    return "".join(c if c.isalnum() else "_" for c in str(text)).strip("_")


def describe_runs(runs, args, overrides):
    ok = sum(r["status"] == "ok" for r in runs)
    seeds = sorted({r["seed"] for r in runs})
    extra = ", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "none"
    failed = [f"{r['model']} {r['label']} seed {r['seed']}: {r.get('error', '')[:200]}" for r in runs
              if r["status"] != "ok"]
    text = f"{ok} of {len(runs)} runs succeeded; seeds {seeds}; command-line overrides: {extra}."
    if failed:
        text += "\n\nFailed runs:\n" + "\n".join(f"- {f}" for f in failed)
    return text


def write_report(folder, name, lines, payload, args):
    """``<name>.md`` and ``<name>.json`` in ``folder`` (+ ``--results`` JSON); prints where they are."""
    from recbole_ssr.quick_start import _plain, write_json

    from recbole_ssr.safe_io import atomic_write

    report = os.path.join(folder, f"{name}.md")
    with atomic_write(report) as f:
        f.write("\n".join(lines).rstrip() + "\n")
    payload = _plain(dict(payload, analysis=name, output_dir=folder))
    write_json(os.path.join(folder, f"{name}.json"), payload)
    results = getattr(args, "results", None)
    if results:
        write_json(results, payload)
    print(f"\n[analysis] {name}: tables, plots and report written to {folder}", flush=True)
    return report
