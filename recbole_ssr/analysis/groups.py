"""Group evaluation: test metrics per user training-degree bucket and for cold-start items (any model).

``group_metrics`` is called by :func:`recbole_ssr.quick_start.run` after the best-valid checkpoint has been evaluated
on the test set, so every run's results carry a ``groups`` entry::

    {"degree_bounds": [5, 10, 20], "n_cold_items": 12,
     "all": {"n_users": 7642, "recall@10": ..., ...},                # = test_result (same users, same ranking)
     "user_degree": {"<=5": {...}, "6-10": {...}, "11-20": {...}, ">20": {...}},
     "cold_items": {"n_users": ..., "n_interactions": ..., "recall@10": ...},
     "cold_items_among_cold": {...}}

Definitions:

* A user's **degree** is their number of distinct training items. ``group_degree_bounds: [b1, b2, ...]`` (config;
  default ``properties/analysis/defaults.yaml``) gives the buckets ``<=b1``, ``b1+1..b2``, ..., ``>bk``; ``<=5`` are the
  paper's cold-start users. Every user the test loader evaluates falls into exactly one bucket.
* **Cold-start items** are items with no training interaction (the padding item excluded); a
  ``cold_item_ratio`` split (:mod:`recbole_ssr.data.cold_split`) creates them on purpose.
  ``cold_items``: the users with at least one test item that is cold; their positives are those cold items only and
  the ranking is the usual one over all items (so a model must lift content-only items above warm ones).
  ``cold_items_among_cold``: the same users and positives, ranked among the cold items only (a pure content
  ranking, as in item cold-start papers).

Scores are the model's full-sort scores with exactly the test loader's masking (RecBole's
``Trainer._full_sort_batch_eval``), the top-k lists are built as RecBole's collector builds them, and the metrics
are RecBole's own metric classes (every configured metric that needs only the top-k positions: Recall, NDCG, Hit,
Precision, MRR, MAP), so the ``all`` group reproduces ``test_result`` exactly.
"""

import os

import numpy as np
import torch

from recbole_ssr.errors import ConfigError


def default_degree_bounds():
    from recbole_ssr.analysis.common import load_defaults

    return load_defaults()["group_degree_bounds"]


def degree_bounds(config):
    """``group_degree_bounds`` of the config (or the analysis defaults), validated: increasing non-negative ints."""
    bounds = config["group_degree_bounds"] if "group_degree_bounds" in config else None
    if bounds is None:
        bounds = default_degree_bounds()
    return check_bounds(bounds)


def check_bounds(bounds):
    if isinstance(bounds, (int, float)):
        bounds = [bounds]
    try:
        values = [int(b) for b in bounds]
    except (TypeError, ValueError):
        values = None
    if not values or values != [b for b in bounds] or any(b < 0 for b in values) or \
            any(a >= b for a, b in zip(values, values[1:])):
        raise ConfigError(
            f"group_degree_bounds must be increasing non-negative integers, e.g. [5, 10, 20] (buckets <=5, 6-10, "
            f"11-20, >20); got {bounds!r}.")
    return values


def bucket_labels(bounds):
    """[5, 10, 20] -> ['<=5', '6-10', '11-20', '>20']."""
    labels = [f"<={bounds[0]}"]
    labels += [f"{lo + 1}" if hi == lo + 1 else f"{lo + 1}-{hi}" for lo, hi in zip(bounds, bounds[1:])]
    return labels + [f">{bounds[-1]}"]


def bucket_index(degrees, bounds):
    """Bucket of each degree: 0 for <= bounds[0], ..., len(bounds) for > bounds[-1]."""
    return np.searchsorted(np.asarray(bounds), np.asarray(degrees), side="left")


def training_matrix(train_dataset):
    matrix = train_dataset.interaction_csr() if hasattr(train_dataset, "interaction_csr") else \
        train_dataset.inter_matrix(form="csr")
    matrix = matrix.tocsr()
    matrix.sum_duplicates()
    return matrix


def training_degrees(train_dataset):
    """(user degrees [user_num], item degrees [item_num]): distinct training interactions (index 0 = padding)."""
    matrix = training_matrix(train_dataset)
    matrix.eliminate_zeros()
    users = np.diff(matrix.indptr)
    items = np.bincount(matrix.indices, minlength=matrix.shape[1])
    return users, items


def topk_metric_objects(config):
    """RecBole metric objects of the configured metrics that need only ``rec.topk``."""
    from recbole.evaluator.register import metrics_dict

    objects = []
    for name in config["metrics"]:
        cls = metrics_dict.get(name.lower())
        if cls is not None and getattr(cls, "metric_need", None) == ["rec.topk"]:
            objects.append(cls(config))
    return objects


def evaluate_topk(metric_objects, rec_topk):
    """RecBole's metrics of ``rec_topk`` ([users, max_k + 1]: hit flags of the top-k list, then #positives)."""
    from recbole.evaluator.collector import DataStruct

    struct = DataStruct()
    struct.set("rec.topk", rec_topk)
    result = {}
    for metric in metric_objects:
        result.update(metric.calculate_metric(struct))
    return {k: float(v) for k, v in result.items()}


@torch.no_grad()
def collect_rankings(trainer, eval_data, cold_items, max_k):
    """Score every user of ``eval_data`` like ``trainer.evaluate`` does; returns numpy/torch arrays:
    ``users`` [U], ``rec`` [U, max_k + 1] (RecBole's rec.topk rows), ``cold_rec`` and ``cold_rec_among`` (the same
    with only cold positives, ranked among all items / among cold items only) and ``cold_pos`` [U] (#cold
    positives)."""
    model = trainer.model
    model.eval()
    dataset = eval_data._dataset
    if getattr(trainer, "item_tensor", None) is None:
        trainer.item_tensor = dataset.get_item_feature().to(trainer.device)
    trainer.tot_item_num = dataset.item_num
    cold = torch.as_tensor(cold_items, dtype=torch.bool, device=trainer.device)
    users, rec, cold_rec, cold_among, cold_pos = [], [], [], [], []
    uid = dataset.uid_field
    for batched in eval_data:
        interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batched)
        k = min(max_k, scores.shape[1])
        _, top = torch.topk(scores, k, dim=-1)
        positives = torch.zeros_like(scores, dtype=torch.int)
        positives[positive_u, positive_i] = 1
        rec.append(torch.cat([torch.gather(positives, 1, top), positives.sum(1, keepdim=True)], dim=1).cpu())
        cold_positives = positives * cold.to(torch.int).unsqueeze(0)
        n_cold = cold_positives.sum(1, keepdim=True)
        cold_rec.append(torch.cat([torch.gather(cold_positives, 1, top), n_cold], dim=1).cpu())
        _, top_cold = torch.topk(scores.masked_fill(~cold.unsqueeze(0), -np.inf), k, dim=-1)
        cold_among.append(torch.cat([torch.gather(cold_positives, 1, top_cold), n_cold], dim=1).cpu())
        cold_pos.append(n_cold.squeeze(1).cpu())
        users.append(interaction[uid].cpu())
    if not users:
        return None
    return {"users": torch.cat(users).numpy(), "rec": torch.cat(rec), "cold_rec": torch.cat(cold_rec),
            "cold_rec_among": torch.cat(cold_among), "cold_pos": torch.cat(cold_pos).numpy()}


def _group(metric_objects, rec, rows, **extra):
    rows = np.asarray(rows)
    entry = {"n_users": int(rows.sum() if rows.dtype == bool else len(rows)), **extra}
    if entry["n_users"] == 0:
        entry.update({f"{m}": None for m in _metric_names(metric_objects)})
        return entry
    entry.update(evaluate_topk(metric_objects, rec[torch.as_tensor(rows)]))
    return entry


def _metric_names(metric_objects):
    names = []
    for metric in metric_objects:
        base = type(metric).__name__.lower()
        names += [f"{base}@{k}" for k in metric.topk]
    return names


def group_metrics(trainer, eval_data, train_dataset, config):
    """The ``groups`` entry of a run (module doc) for ``eval_data`` (a full-sort loader); None for other loaders
    (sampled evaluation) or without top-k metrics."""
    from recbole.data.dataloader import FullSortEvalDataLoader

    if not isinstance(eval_data, FullSortEvalDataLoader):
        return None
    metric_objects = topk_metric_objects(config)
    if not metric_objects:
        return None
    bounds = degree_bounds(config)
    user_degree, item_degree = training_degrees(train_dataset)
    cold_items = item_degree == 0
    cold_items[0] = False
    max_k = max(config["topk"]) if isinstance(config["topk"], (list, tuple)) else int(config["topk"])
    collected = collect_rankings(trainer, eval_data, cold_items, max_k)
    if collected is None:
        return None
    users, rec = collected["users"], collected["rec"]
    buckets = bucket_index(user_degree[users], bounds)
    result = {"degree_bounds": bounds, "n_cold_items": int(cold_items.sum()),
              "all": _group(metric_objects, rec, np.ones(len(users), dtype=bool)),
              "user_degree": {}}
    for index, label in enumerate(bucket_labels(bounds)):
        result["user_degree"][label] = _group(metric_objects, rec, buckets == index)
    with_cold = collected["cold_pos"] > 0
    n_inter = int(collected["cold_pos"].sum())
    result["cold_items"] = _group(metric_objects, collected["cold_rec"], with_cold, n_interactions=n_inter)
    result["cold_items_among_cold"] = _group(metric_objects, collected["cold_rec_among"], with_cold,
                                             n_interactions=n_inter)
    return result


def group_names(groups):
    """Flat (name, entry) pairs of a ``groups`` entry, in table order."""
    if not groups or "all" not in groups:  # None (sampled evaluation) or {"error": ...}
        return []
    pairs = [("all", groups["all"])]
    pairs += [(f"users {label}", entry) for label, entry in groups["user_degree"].items()]
    pairs += [("cold items", groups["cold_items"]), ("cold items (among cold)", groups["cold_items_among_cold"])]
    return pairs


def groups_markdown(groups, metrics=None):
    """A markdown table of one run's ``groups`` (rows: groups; columns: users and ``metrics``, default all)."""
    pairs = group_names(groups)
    if not pairs:
        return ""
    metrics = metrics or [k for k in pairs[0][1] if "@" in k]
    header = "| group | users | " + " | ".join(metrics) + " |\n|" + "---|" * (len(metrics) + 2)
    rows = ["| " + " | ".join([name, str(entry["n_users"])] + [
        "–" if entry.get(m) is None else f"{entry[m]:.4f}" for m in metrics]) + " |" for name, entry in pairs]
    return "\n".join([header] + rows)


# ---------------------------------------------------------------------------------------------------------------
# --analysis=groups
# ---------------------------------------------------------------------------------------------------------------
def runs_from_files(paths, models, dataset):
    """Finished runs of ``models`` on ``dataset`` read from results files (``--analysis_from``), no training."""
    from recbole_ssr.benchmark import load_runs

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
    if not runs:
        raise ConfigError(f"--analysis_from: no run of {', '.join(models)} with group metrics in {', '.join(paths)}.")
    return runs, without_groups


def run_groups(models, dataset, args, overrides, settings):
    """Every model x seed; tables of the metrics per group (mean ± std over seeds), CSV, JSON, a bar chart.
    Returns the output folder."""
    from recbole_ssr.analysis import common, plots

    metric = settings["analysis_metric"]
    folder = common.start(args, "groups", dataset)
    if getattr(args, "analysis_from", None):
        runs, without_groups = runs_from_files(args.analysis_from, models, dataset)
    else:
        without_groups = []
        runs = common.run_grid([(model, "default", {}) for model in models], dataset, args, overrides, settings,
                               progress_path=os.path.join(folder, "runs.jsonl"))
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
    metric_table = common.markdown_table(["model"] + group_order, table_rows + [count_row])
    detail = common.summary_table(summary, ("model", "group"), common.metric_keys(rows))

    common.write_csv(os.path.join(folder, "groups.csv"), rows)
    common.write_csv(os.path.join(folder, "groups_summary.csv"), common.summary_rows(summary, ("model", "group")))
    chart = os.path.join(folder, f"groups_{common.slug(metric)}.png")
    plots.grouped_bars(chart, group_order,
                       {m: [summary.get((m, g), {}).get(metric, (np.nan, np.nan)) for g in group_order]
                        for m in models},
                       ylabel=metric, title=f"{dataset}: {metric} per group (test)")
    report = [f"# Group evaluation: {dataset}", "",
              common.describe_runs(runs, args, overrides)
              + (f" Runs read from {', '.join(args.analysis_from)} (no training)."
                 if getattr(args, "analysis_from", None) else "")
              + (f" Left out for lack of group metrics: {', '.join(without_groups)}." if without_groups else ""), "",
              f"## {metric} per group (mean ± std over seeds; last row: evaluated users)", "", metric_table, "",
              "## Every metric", "", detail, "", f"![{metric} per group]({os.path.basename(chart)})", "",
              common.GROUP_DEFINITIONS]
    common.write_report(folder, "groups", report, {"summary": common.summary_rows(summary, ("model", "group")),
                                                   "runs": runs}, args)
    print(f"\n{dataset}: {metric} per group, mean ± std over seeds\n\n{metric_table}")
    return folder
