"""``--analysis=ablation``: the full model against each component switched off, same seeds, one table.

Variants (``ablation_variants`` in ``properties/analysis/defaults.yaml``; SSR's switches, docs/ssr.md "Switches"):
``full``; ``no_masking`` (``mask_weight: 0``: no masked pass, no consistency loss); ``no_operator``
(``use_operator: False``: no G-HSNO, no Ω); ``no_gating`` (``use_gate: False``: plain band sum); ``no_contrastive``
(``cl_weight: 0``); ``id_only`` (``use_modalities: []``: no content features); and with
``ablation_single_modalities`` one ``only_<m>`` variant (``use_modalities: [<m>]``) per modality of the dataset.
A variant is skipped (and listed as such) when the model's configuration lacks one of its keys, or when it would
equal ``full`` (e.g. ``only_image`` on a one-modality dataset).

Output: ``ablation.md`` (table: test metrics mean ± std over seeds, the cold-start-user bucket, change of
``analysis_metric`` against ``full``), ``ablation.csv`` (per run), ``ablation_summary.csv``, ``ablation.json``,
``ablation_<metric>.png``.
"""

import os

from recbole_ssr.experiments.analysis import common, plots
from recbole_ssr.data.features import resolve_modalities
from recbole_ssr.core.report import markdown_table, write_csv


def dataset_modalities(config):
    """The modality names a run on this configuration would use (no data loaded)."""
    folder = config["dataset_dir"] if "dataset_dir" in config and config["dataset_dir"] else config["data_path"]
    return list(resolve_modalities(config, folder))


def plan_variants(model, dataset, spec, overrides, settings):
    """[(label, overrides)] to run and [(label, reason)] skipped, for one model."""
    config = common.model_config(model, dataset, spec.config_files, overrides)
    variants = dict(settings["ablation_variants"])
    if "full" not in variants:
        variants = {"full": {}, **variants}
    modalities = dataset_modalities(config)
    if settings.get("ablation_single_modalities", True) and len(modalities) > 1:
        for name in modalities:
            variants.setdefault(f"only_{name}", {"use_modalities": [name]})
    planned, skipped = [], []
    for label, extra in variants.items():
        missing = [k for k in extra if k not in config]
        if missing:
            skipped.append((label, f"{config['model']} has no configuration key {', '.join(missing)}"))
        elif label != "full" and all(_same(config[k], v, modalities) for k, v in extra.items()):
            skipped.append((label, "same configuration as full"))
        else:
            planned.append((label, dict(extra)))
    return planned, skipped


def _same(current, value, modalities):
    if isinstance(value, (list, tuple)) and current is None:  # use_modalities ~ = every modality
        return list(value) == modalities
    return current == value


def run_ablation(models, dataset, spec, overrides, settings):
    metric = settings["analysis_metric"]
    plans = common.plan(models, lambda model: plan_variants(model, dataset, spec, overrides, settings),
                        "no ablation variant applies to the given model(s).")
    folder = common.start(spec, "ablation", dataset)
    configs = [(model, label, extra) for model in models for label, extra in plans[model][0]]
    runs = common.run_grid(configs, dataset, spec, overrides, settings,
                           progress_path=os.path.join(folder, "runs.jsonl"))
    plans, models = common.by_name(plans, models)

    rows = [common.result_row(run, {"model": run["model"], "variant": run["label"], "seed": run["seed"],
                                     "overrides": run["overrides"]}, n_params=True)
            for run in runs if run["status"] == "ok"]
    values = common.metric_keys(rows)
    summary = common.summarise(rows, ("model", "variant"), values)

    cold_metric = next((k for k in values if k.startswith("users ") and k.endswith(f" {metric}")), None)
    header = ["model", "variant", "overrides"] + [k for k in values if not k.startswith("users ")]
    header += [cold_metric] if cold_metric else []
    header += [f"Δ {metric} vs full", "runs"]
    table_rows = []
    for model in models:
        reference = summary.get((model, "full"), {}).get(metric)
        for label, extra in plans[model][0]:
            stats = summary.get((model, label))
            if stats is None:
                table_rows.append([model, label, _fmt_overrides(extra)] + ["failed"] + [""] * (len(header) - 4))
                continue
            cells = [model, label, _fmt_overrides(extra)]
            cells += [common.fmt_mean_std(stats.get(k)) for k in header[3:-2]]
            cells += ["" if label == "full" else common.fmt_change(stats.get(metric), reference), stats["n"]]
            table_rows.append(cells)
    table = markdown_table(header, table_rows)
    skipped = [f"- {model} `{label}`: {reason}" for model in models for label, reason in plans[model][1]]

    write_csv(os.path.join(folder, "ablation.csv"), rows)
    write_csv(os.path.join(folder, "ablation_summary.csv"),
                     common.summary_rows(summary, ("model", "variant")))
    chart = os.path.join(folder, f"ablation_{common.slug(metric)}.png")
    labels = list(dict.fromkeys(label for model in models for label, _ in plans[model][0]))
    plots.grouped_bars(chart, labels, {m: [summary.get((m, v), {}).get(metric) for v in labels] for m in models},
                       ylabel=metric, title=f"{dataset}: ablation ({metric}, test)")
    report = [f"# Ablation: {dataset}", "", common.describe_runs(runs, overrides), "",
              "Test metrics of the best-valid checkpoint, mean ± std over seeds; Δ = relative change of the mean "
              f"{metric} against `full`; `users <=b`: the cold-start user bucket.", "", table, ""]
    if skipped:
        report += ["Skipped variants:", ""] + skipped + [""]
    report += [f"![ablation]({os.path.basename(chart)})", "", common.GROUP_DEFINITIONS]
    common.write_report(folder, "ablation", report,
                        {"summary": common.summary_rows(summary, ("model", "variant")), "runs": runs,
                         "skipped": [{"model": m, "variant": l, "reason": r} for m in models for l, r in plans[m][1]]}, spec.results,
                        models, dataset)
    print(f"\n{dataset}: ablation, test metrics mean ± std over seeds\n\n{table}")
    return folder


def _fmt_overrides(extra):
    return ", ".join(f"{k}={v}" for k, v in extra.items()) or "–"
