"""What a benchmark table carries beside its means: its runs' per-user metrics, the significance of every model
against the best one, and its LaTeX twin (docs/significance.md). The side-by-side mode, its merge
(``python -m recbole_ssr.benchmark``) and the tuned benchmark all write their tables through here.

For a results file ``bench.json``:

* ``bench.users.json.gz``: the per-user test metrics of its runs (:mod:`recbole_ssr.training.per_user`). A batch
  takes each run's metrics out of its outcome as the run finishes (no results file holds them) and adds them to
  the sidecar of its runs log (:func:`keep_per_user`); a merge adds the records of the runs it merged
  (:func:`write_companions`);
* significance (:func:`significance_against_best`): the summary rows (JSON, CSV) get every model's significance columns
  (:func:`recbole_ssr.experiments.significance.significance_columns`), the JSON the whole result under
  ``significance``, the markdown table the markers (:func:`marker`) and the legend (:func:`legend`);
* ``bench.tex``: the booktabs table (:mod:`recbole_ssr.experiments.latex`), marked by its first line
  (:data:`TEX_HEADER`) as this project's, so a rerun replaces it and nobody else's ``.tex`` is overwritten.

A run without per-user metrics stays in the table, marked not tested (``?``), and the output says how many.
"""

import os
import re

from recbole_ssr.core.errors import RecboleSSRError
from recbole_ssr.core.safe_io import check_may_replace_table
from recbole_ssr.experiments import latex, significance
from recbole_ssr.training import per_user

#: the first line of every ``.tex`` table this project writes
TEX_HEADER = "% benchmark table written by recbole-ssr (python -m recbole_ssr.benchmark); rewritten with its results"
DEFAULT_SELECT = "recall@20"


def check_companions(results_path, overwrite=False):
    """The ``.tex`` and the per-user sidecar beside ``results_path`` may be written (before anything runs)."""
    check_may_replace_table(latex.tex_path(results_path), TEX_HEADER, "--results LaTeX table", overwrite)
    per_user.check_may_replace_sidecar(per_user.sidecar_path(results_path), overwrite)


def keep_per_user(log_path, outcome, entry, say, overwrite=False):
    """Add a finished run's per-user metrics ``entry`` (taken out of its ``outcome``: no results file holds them) to
    the sidecar of the runs log ``log_path``. A sidecar that cannot be written costs the run its significance test,
    never the run: said with ``say``, and the table marks the run not tested."""
    if entry is None or outcome.get("status") != "ok":
        return
    record = per_user.run_record(outcome["model"], outcome["seed"], outcome["dataset"], entry, outcome.get("run_id"))
    path = per_user.sidecar_path(log_path)
    try:
        per_user.add_to_sidecar(path, [record], replace_unreadable=overwrite)
    except (OSError, RecboleSSRError) as exc:
        say(f"the per-user metrics of {outcome['model']} seed {outcome['seed']} were not kept ({path}: "
            f"{getattr(exc, 'strerror', None) or exc}); the table marks it not tested.")


def selection_metric(runs):
    """The validation metric the runs were selected by (their ``valid_metric``), lower case; Recall@20 when they
    disagree or do not say."""
    names = {str((r.get("config") or {}).get("valid_metric") or DEFAULT_SELECT).lower()
             for r in runs if r.get("status", "ok") == "ok"}
    return names.pop() if len(names) == 1 else DEFAULT_SELECT


def significance_against_best(runs, models, sidecars, say):
    """Every model of ``runs`` against the best one. Returns ``(result, records, why)``: the result of
    :func:`recbole_ssr.experiments.significance.compare_to_best` (None when it cannot be computed, ``why`` says
    why: no successful run, no validation metric to select by), and the sidecar records of the runs it used
    (``sidecars``: the files to read them from). A damaged sidecar is an error naming it."""
    entries, records = per_user.entries_for_runs(runs, sidecars)
    ok = [(r["model"], r.get("seed")) for r in runs if r.get("status", "ok") == "ok"]
    without = [f"{m} seed {s}" for m, s in dict.fromkeys(ok) if (m, s) not in entries]
    if without:
        say(f"per-user test metrics for {len(ok) - len(without)} of {len(ok)} successful run(s); not tested: "
            f"{', '.join(without[:6])}{' ...' if len(without) > 6 else ''}")
    try:
        result = significance.compare_to_best(runs, entries, select_metric=selection_metric(runs), models=models)
    except RecboleSSRError as exc:
        say(f"significance not computed: {exc}")
        return None, records, str(exc)
    return result, records, None


def add_columns(rows, result):
    """Each summary row gets its model's significance columns (nothing without a result)."""
    for row in rows:
        if result is not None and row["model"] in result["models"]:
            row.update(significance.significance_columns(result, row["model"]))
    return rows


def marker(result, model):
    """The markdown marker after ``model``'s name ('' without a result)."""
    if result is None or model not in result["models"]:
        return ""
    return significance.marker(result, model)


def legend(result):
    """The sentence below a markdown table explaining its markers; '' when no model was compared."""
    if result is None or not any(info["role"] == "compared" for info in result["models"].values()):
        return ""
    return significance.legend(result)


def json_field(result, why):
    """What the results JSON keeps under ``significance``."""
    return result if result is not None else {"not_computed": why}


def write_companions(results_path, rows, result, records, metrics, n_seeds, dataset, note=None, overwrite=False):
    """Write the sidecar (``records`` added) and the ``.tex`` table beside ``results_path``; returns their paths."""
    written = []
    sidecar = per_user.sidecar_path(results_path)
    if records or os.path.lexists(sidecar):
        per_user.add_to_sidecar(sidecar, records, replace_unreadable=overwrite)
        written.append(sidecar)
    tex = latex.tex_path(results_path)
    label = "tab:" + re.sub(r"[^A-Za-z0-9:.-]+", "-", os.path.basename(tex)[:-len(".tex")])
    latex.write_latex(tex, TEX_HEADER + "\n" + latex.latex_table(rows, metrics, n_seeds, significance=result,
                                                                 dataset=dataset, label=label, note=note))
    written.append(tex)
    return written
