"""Is the difference real? Every model compared with the best one, per user and per seed (docs/significance.md).

**The reference** is the model with the best mean *validation* metric (``select_metric``, default Recall@20) over its
successful seeds; choosing it on test would bias every comparison in its favour. A tie goes to the model listed first.

**Per user** (drives the marker). For one metric, each user's value of model ``m`` is its mean over ``m``'s seeds
that evaluated the user, ``x_m(u)``; with ``U`` the users evaluated for both ``m`` and the best ``b``::

    d(u) = x_m(u) - x_b(u)                        (negative: m is worse than the best for user u)
    mean difference  = mean_U d(u)
    relative change  = mean_U d(u) / mean_U x_b(u)

and the two-sided Wilcoxon signed-rank test of "d is symmetric about 0" (``scipy.stats.wilcoxon``; as with its
default ``zero_method='wilcox'``, users with d(u) = 0 carry no sign and are dropped; ``n_nonzero`` counts the rest).
When every d(u) is 0 the p-value is 1 (no evidence of any difference). Differences are rounded to 12 decimals
before ranking, so that equal differences are tied ranks whatever float route produced them; under 1e-12 they count
as 0 (rounding).

**Per seed** (reported, no marker). With the seeds ``S`` that succeeded for both models (paired by seed number)
and ``|S| >= 3``, the paired t-test of the seeds' test metrics (``scipy.stats.ttest_rel``): ``t = mean(e) /
(sd(e) / sqrt(|S|))`` with ``e(s) = y_m(s) - y_b(s)``, ``|S| - 1`` degrees of freedom; it assumes the seed-to-seed
differences are roughly normal. Identical values give p = 1; a constant non-zero difference p = 0.

**Holm.** For each test and metric, the p-values of the models compared with the best form one family
(:func:`holm`); the adjusted ``p_holm`` is what is compared with ``alpha``.

**The marker** (:data:`MARKER`, ``†``) goes to a model whose per-user Wilcoxon test, after Holm, is **not**
significant (``p_holm >= alpha``) on *every* metric in ``metrics``: it is statistically tied with the best. A model
that differs significantly on any of them (better or worse) gets none, and neither does the best itself. A model
whose per-user test could not run (no per-user metrics for it or for the best) is *not tested* (:data:`UNTESTED`,
``?``) with the reason in ``note``.

Imports: :mod:`recbole_ssr.core.errors` and :mod:`recbole_ssr.core.report` (and numpy, scipy); nothing above them.
"""

import numpy as np

from recbole_ssr.core.errors import RecboleSSRError
from recbole_ssr.core.report import mean_std

METRICS = ("recall@20", "ndcg@20")
MARKER = "†"
UNTESTED = "?"
DECIMALS = 12  # per-user differences are compared at this many decimals, so that equal differences are ties
ZERO = 10.0 ** -DECIMALS  # |difference| below this is rounding, not a difference
MIN_SEEDS = 3


def holm(p_values):
    """Holm's step-down adjusted p-values in the input order; ``None`` entries are not in the family and stay None.

    With the ``m`` p-values sorted, ``p(1) <= ... <= p(m)``::

        p_holm(i) = max_{j <= i} min(1, (m - j + 1) * p(j))

    Rejecting where ``p_holm < alpha`` is Holm's procedure: family-wise error rate <= alpha under any dependence.
    """
    tested = [(p, index) for index, p in enumerate(p_values) if p is not None]
    adjusted = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


def wilcoxon_paired(best, other):
    """The per-user comparison (module doc) of two aligned value arrays: ``n_users``, ``n_nonzero``, ``mean_best``,
    ``mean_diff`` (other - best), ``relative_change``, ``statistic`` and two-sided ``p``."""
    from scipy import stats

    best, other = np.asarray(best, dtype=np.float64), np.asarray(other, dtype=np.float64)
    diff = other - best
    diff[np.abs(diff) < ZERO] = 0.0
    # the rest rounded at the same resolution: equal differences reached by different float routes (2/3 - 1/3 against
    # 1 - 2/3) are then tied, as the ranks must treat them; unrounded, the last-bit noise breaks those ties and shifts
    # whole groups of ranks (seed-averaged top-k values are few and repeat a lot)
    diff = np.round(diff, DECIMALS)
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        statistic, p = 0.0, 1.0
    else:
        # zeros dropped here, as zero_method="wilcox" does (then scipy's exact/normal choice is the same across its
        # versions: exact for up to 50 differences without ties, else the normal approximation with tie correction)
        statistic, p = stats.wilcoxon(diff[diff != 0], alternative="two-sided")
    mean_best = float(best.mean())
    return {"n_users": int(len(diff)), "n_nonzero": nonzero, "mean_best": mean_best, "mean_diff": float(diff.mean()),
            "relative_change": float(diff.mean() / mean_best) if mean_best else None,
            "statistic": float(statistic), "p": float(p)}


def ttest_paired(best, other):
    """The per-seed comparison (module doc) of aligned seed values: ``n_seeds``, ``mean_diff``, ``statistic``,
    two-sided ``p``."""
    from scipy import stats

    best, other = np.asarray(best, dtype=np.float64), np.asarray(other, dtype=np.float64)
    diff = other - best
    if np.ptp(diff) < ZERO:  # zero variance: t is 0/0 (p = 1) or infinite (p = 0; no statistic, JSON has no inf)
        statistic, p = (0.0, 1.0) if abs(diff.mean()) < ZERO else (None, 0.0)
    else:
        statistic, p = stats.ttest_rel(other, best)
    return {"n_seeds": int(len(diff)), "mean_diff": float(diff.mean()),
            "statistic": None if statistic is None else float(statistic), "p": float(p)}


def user_values(entries, metric):
    """``(tokens, values)``: each user's ``metric`` averaged over the per-user entries (one per seed) that evaluated
    the user; tokens sorted."""
    tokens = np.concatenate([np.asarray(e["users"], dtype=str) for e in entries])
    values = np.concatenate([np.asarray(e["metrics"][metric], dtype=np.float64) for e in entries])
    unique, inverse = np.unique(tokens, return_inverse=True)
    return unique, np.bincount(inverse, values) / np.bincount(inverse)


def pick_best(runs, models, select_metric):
    """``(best model, {model: mean validation metric})`` over the successful runs (module doc)."""
    valid = {}
    for model in models:
        scores = [r["best_valid_result"].get(select_metric) for r in runs if r["model"] == model]
        if any(s is None for s in scores):
            have = sorted(next(r["best_valid_result"] for r in runs if r["model"] == model))
            raise RecboleSSRError(f"{model}: its runs have no validation {select_metric} to choose the best model "
                                  f"by (they have {', '.join(have)}); choose one of those.")
        if scores:
            valid[model] = mean_std(scores)[0]
    if not valid:
        raise RecboleSSRError("no successful run to compare: significance needs at least one model that ran.")
    best = max(valid, key=lambda m: (valid[m], -models.index(m)))
    return best, valid


def compare_to_best(runs, per_user=None, metrics=METRICS, select_metric="recall@20", alpha=0.05, models=None):
    """Every model against the best (module doc); a JSON-ready dict.

    ``runs``: run outcomes as in the results files (``model``, ``seed``, ``status``, ``test_result``,
    ``best_valid_result``); failed ones are left out. ``per_user``: ``{(model, seed): entry}``
    (:func:`recbole_ssr.training.per_user.load_sidecars`); runs without an entry are not in the per-user test. Returns
    ``{"best", "select_metric", "alpha", "metrics", "marker", "models": {model: {"role": "best" | "compared" |
    "failed", "valid", "seeds", "per_user_seeds", "vs_best": "best" | "tied" | "different" | "not tested",
    "per_user": {metric: test or {"not_tested": why}}, "per_seed": {...}, "note"}}}``.
    """
    per_user = per_user or {}
    metrics, select_metric = [m.lower() for m in metrics], select_metric.lower()  # RecBole's keys: "recall@20"
    ok = [r for r in runs if r.get("status", "ok") == "ok"]
    models = list(models or dict.fromkeys(r["model"] for r in runs))
    best, valid = pick_best(ok, models, select_metric)
    seeds = {m: sorted({r["seed"] for r in ok if r["model"] == m}) for m in models}
    entries = {m: [per_user[(m, s)] for s in seeds[m] if (m, s) in per_user] for m in models}
    result = {"best": best, "select_metric": select_metric, "alpha": alpha, "metrics": list(metrics),
              "marker": MARKER, "models": {}}
    for model in models:
        info = {"role": "compared", "valid": valid.get(model), "seeds": seeds[model],
                "per_user_seeds": [s for s in seeds[model] if (model, s) in per_user]}
        if model == best:
            info.update(role="best", vs_best="best")
        elif model not in valid:
            info.update(role="failed", vs_best="not tested", note="no successful run")
        else:
            info["per_user"] = {m: _per_user_test(entries, best, model, m) for m in metrics}
            info["per_seed"] = {m: _per_seed_test(ok, best, model, m) for m in metrics}
        result["models"][model] = info
    compared = [m for m in models if result["models"][m]["role"] == "compared"]
    for test in ("per_user", "per_seed"):
        for metric in metrics:
            cells = [result["models"][m][test][metric] for m in compared]
            for cell, adjusted in zip(cells, holm([c.get("p") for c in cells])):
                if adjusted is not None:
                    cell["p_holm"] = adjusted
    for model in compared:
        _verdict(result["models"][model], metrics, alpha)
    return result


def _per_user_test(entries, best, model, metric):
    if not entries[best]:
        return {"not_tested": f"the best model ({best}) has no per-user metrics"}
    if not entries[model]:
        return {"not_tested": "no per-user metrics (runs made before they were kept, or sampled evaluation)"}
    for name in (best, model):
        if any(metric not in e["metrics"] for e in entries[name]):
            return {"not_tested": f"the per-user metrics of {name} have no {metric} (is {metric.split('@')[1]} in "
                                  "topk?)"}
    best_users, best_values = user_values(entries[best], metric)
    users, values = user_values(entries[model], metric)
    _, in_best, in_model = np.intersect1d(best_users, users, assume_unique=True, return_indices=True)
    if not len(in_best):
        return {"not_tested": f"no user was evaluated for both {model} and {best} (different datasets?)"}
    return wilcoxon_paired(best_values[in_best], values[in_model])


def _per_seed_test(runs, best, model, metric):
    by_seed = {name: {r["seed"]: r["test_result"].get(metric) for r in runs if r["model"] == name}
               for name in (best, model)}
    common = sorted(s for s in set(by_seed[best]) & set(by_seed[model])
                    if by_seed[best][s] is not None and by_seed[model][s] is not None)
    if len(common) < MIN_SEEDS:
        return {"not_tested": f"{len(common)} seed(s) paired with the best; the t-test needs {MIN_SEEDS} or more"}
    return ttest_paired([by_seed[best][s] for s in common], [by_seed[model][s] for s in common])


def _verdict(info, metrics, alpha):
    untested = [f"{m}: {info['per_user'][m]['not_tested']}" for m in metrics if "p_holm" not in info["per_user"][m]]
    if untested:
        info.update(vs_best="not tested", note="; ".join(dict.fromkeys(untested)))
        return
    tied = all(info["per_user"][m]["p_holm"] >= alpha for m in metrics)
    info["vs_best"] = "tied" if tied else "different"


def marker(result, model):
    """The table marker of ``model``: :data:`MARKER` (tied with the best), :data:`UNTESTED` or ''."""
    info = result["models"][model]
    if info["role"] != "compared":  # the best itself, or a model without a successful run (the table says failed)
        return ""
    return {"tied": MARKER, "not tested": UNTESTED}.get(info["vs_best"], "")


def legend(result, marker_text=MARKER, untested_text=UNTESTED, name=str):
    """One sentence explaining the markers (below the markdown table; the LaTeX caption passes its own markers and
    ``name``, the escaping of the best model's name)."""
    n_compared = sum(info["role"] == "compared" for info in result["models"].values())
    text = (f"{marker_text}: not significantly different from {name(result['best'])} (best mean validation "
            f"{result['select_metric']}) at {result['alpha']:g} by a two-sided paired Wilcoxon signed-rank test on "
            f"per-user test {' and '.join(result['metrics'])} (users' values averaged over seeds), Holm-corrected "
            f"over the {n_compared} model(s) compared.")
    if any(info["vs_best"] == "not tested" and info["role"] == "compared" for info in result["models"].values()):
        text += f" {untested_text}: not tested (no per-user metrics)."
    return text


def significance_columns(result, model):
    """Flat columns for ``model``'s summary row (JSON/CSV): ``vs_best``, per metric ``<metric>_user_p``,
    ``_user_p_holm``, ``_user_diff``, ``_user_rel``, ``_user_n``, ``_seed_p``, ``_seed_p_holm``, and
    ``significance_note``."""
    info = result["models"][model]
    columns = {"vs_best": info["vs_best"]}
    notes = [info["note"]] if info.get("note") else []
    for metric in result["metrics"]:
        user = info.get("per_user", {}).get(metric, {})
        seed = info.get("per_seed", {}).get(metric, {})
        columns.update({f"{metric}_user_p": user.get("p"), f"{metric}_user_p_holm": user.get("p_holm"),
                        f"{metric}_user_diff": user.get("mean_diff"), f"{metric}_user_rel": user.get("relative_change"),
                        f"{metric}_user_n": user.get("n_users"),
                        f"{metric}_seed_p": seed.get("p"), f"{metric}_seed_p_holm": seed.get("p_holm")})
        if "not_tested" in seed:
            notes.append(f"t-test: {seed['not_tested']}")
    columns["significance_note"] = "; ".join(dict.fromkeys(notes))
    return columns
