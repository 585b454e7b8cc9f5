"""Group evaluation: test metrics per user training-degree bucket and for cold-start items (any model).

The trainer computes them (:meth:`recbole_ssr.training.trainer.GroupEvaluationMixin.evaluate_groups`, called by
:func:`recbole_ssr.experiments.run.run` after the best-valid checkpoint has been evaluated on the test set), so every
run's results carry a ``groups`` entry::

    {"degree_bounds": [5, 10, 20], "n_cold_items": 12,
     "all": {"n_users": 7642, "recall@10": ..., ...},                # = test_result (same users, same ranking)
     "user_degree": {"<=5": {...}, "6-10": {...}, "11-20": {...}, ">20": {...}},
     "cold_items": {"n_users": ..., "n_interactions": ..., "recall@10": ...},
     "cold_items_among_cold": {...}}

This module holds the maths (buckets, RecBole's top-k metrics over rows of ``rec.topk``, the assembly of the entry);
it imports no other module of the package but :mod:`recbole_ssr.core.errors` and :mod:`recbole_ssr.core.paths`.

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

from recbole_ssr.core.errors import ConfigError
from recbole_ssr.core.paths import properties_dir
from recbole_ssr.core.report import markdown_table

ANALYSIS_DEFAULTS = os.path.join("analysis", "defaults.yaml")


def analysis_defaults():
    """``properties/analysis/defaults.yaml`` as a dict (the analyses' settings and the default degree bounds)."""
    import yaml

    path = os.path.join(properties_dir(), ANALYSIS_DEFAULTS)
    if not os.path.isfile(path):
        raise ConfigError(f"the analysis settings file {path} is missing; restore properties/{ANALYSIS_DEFAULTS} "
                          "from the source tree.")
    with open(path, "r", encoding="utf-8") as f:
        loaded = yaml.safe_load(f) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must be a yaml mapping of settings.")
    return loaded

import numpy as np
import torch

from recbole_ssr.core.errors import ConfigError


def default_degree_bounds():
    return analysis_defaults()["group_degree_bounds"]


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


def group_result(metric_objects, bounds, user_degree, cold_items, collected):
    """The ``groups`` entry (module doc) from the rankings a trainer collected (``collected``: ``users`` [U],
    ``rec``, ``cold_rec``, ``cold_rec_among`` [U, max_k + 1] rec.topk rows and ``cold_pos`` [U])."""
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


def rankings_rows(scores, positive_u, positive_i, cold, max_k):
    """One evaluated batch as rec.topk rows (RecBole's collector): the hit flags of the top-``max_k`` list and the
    number of positives, for all positives, for the cold positives ranked among all items, and for the cold
    positives ranked among the cold items only; plus the number of cold positives per user."""
    k = min(max_k, scores.shape[1])
    _, top = torch.topk(scores, k, dim=-1)
    positives = torch.zeros_like(scores, dtype=torch.int)
    positives[positive_u, positive_i] = 1
    rec = torch.cat([torch.gather(positives, 1, top), positives.sum(1, keepdim=True)], dim=1).cpu()
    cold_positives = positives * cold.to(torch.int).unsqueeze(0)
    n_cold = cold_positives.sum(1, keepdim=True)
    cold_rec = torch.cat([torch.gather(cold_positives, 1, top), n_cold], dim=1).cpu()
    _, top_cold = torch.topk(scores.masked_fill(~cold.unsqueeze(0), -np.inf), k, dim=-1)
    cold_among = torch.cat([torch.gather(cold_positives, 1, top_cold), n_cold], dim=1).cpu()
    return rec, cold_rec, cold_among, n_cold.squeeze(1).cpu()


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
    rows = [[name, str(entry["n_users"])] + ["–" if entry.get(m) is None else f"{entry[m]:.4f}" for m in metrics]
            for name, entry in pairs]
    return markdown_table(["group", "users"] + list(metrics), rows)
