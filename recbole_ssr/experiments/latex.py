r"""The side-by-side table for a paper: ``bench.tex``, a booktabs ``tabular`` in a ``table`` with its caption.

* rows: the models of the summary, in its order; columns: the metrics;
* a cell: the mean over the model's successful seeds (``decimals`` places), then the sample standard deviation in
  small type (``with_std``); a model with fewer successful seeds than the others says so after its name;
* per column the best mean is **bold** and the second best underlined. Ranks are taken on the *printed* (rounded)
  means, so values that look equal get the same emphasis, and every model sharing a rank shares it;
* given the significance result (:func:`recbole_ssr.experiments.significance.compare_to_best`), each model's marker is a
  superscript after its name and the caption explains it, beside the number of seeds;
* model names and every other text are escaped for LaTeX (``_``, ``&``, ``%``, ``#``, ...).

The document needs ``\usepackage{booktabs}``. Imports: :mod:`recbole_ssr.experiments.significance` and
:mod:`recbole_ssr.core.safe_io`.
"""

import math

from recbole_ssr.experiments import significance as sig
from recbole_ssr.core.safe_io import atomic_write

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
#: significance markers as LaTeX superscripts
MARKERS = {sig.MARKER: r"$^{\dagger}$", sig.UNTESTED: r"$^{?}$"}
_METRIC_NAMES = {"recall": "Recall", "ndcg": "NDCG", "hit": "Hit", "precision": "Precision", "mrr": "MRR", "map": "MAP"}


def escape(text):
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_ESCAPES.get(char, char) for char in str(text))


def metric_header(metric):
    """``recall@20`` -> ``Recall@20``."""
    name, _, k = metric.partition("@")
    return _METRIC_NAMES.get(name.lower(), name) + (f"@{k}" if k else "")


def column_ranks(values):
    """Rank of each printed value in its column: 1 for the highest, 2 for the next distinct one, None for the
    rest and for missing values (higher is better for every top-k metric)."""
    distinct = sorted({v for v in values if v is not None}, reverse=True)
    return [None if v is None or distinct.index(v) > 1 else distinct.index(v) + 1 for v in values]


def latex_table(rows, metrics, n_seeds, significance=None, dataset=None, label="tab:bench", decimals=4,
                with_std=True, note=None):
    """The ``bench.tex`` text of summary ``rows`` (``model``, ``runs_ok``, ``<metric>_mean``, ``<metric>_std``).

    ``n_seeds``: the seeds each model was run with (the caption says how many); ``significance``: the result of
    :func:`recbole_ssr.experiments.significance.compare_to_best` for these models (None: no markers); ``note``: a
    sentence for the caption (plain text, escaped here), e.g. how the models were tuned.
    """
    markers, legend = {}, ""
    if significance is not None:
        markers = {row["model"]: sig.marker(significance, row["model"]) for row in rows
                   if row["model"] in significance["models"]}
        legend = sig.legend(significance, MARKERS[sig.MARKER], MARKERS[sig.UNTESTED], name=escape)

    def printed(row, metric):
        value = row.get(f"{metric}_mean")
        if not row.get("runs_ok") or value is None or math.isnan(value):
            return None
        return f"{value:.{decimals}f}"

    cells = {metric: [printed(row, metric) for row in rows] for metric in metrics}
    ranks = {metric: column_ranks([None if c is None else float(c) for c in cells[metric]]) for metric in metrics}
    lines = [r"\begin{table}[t]", r"\centering",
             r"\caption{" + _caption(dataset, n_seeds, legend, note) + "}", r"\label{" + escape(label) + "}",
             r"\begin{tabular}{l" + "c" * len(metrics) + "}", r"\toprule",
             " & ".join(["Model"] + [escape(metric_header(m)) for m in metrics]) + r" \\", r"\midrule"]
    for index, row in enumerate(rows):
        name = escape(row["model"]) + MARKERS.get(markers.get(row["model"], ""), "")
        if row.get("runs_ok") and row["runs_ok"] < n_seeds:
            name += r" {\scriptsize(" + f"{row['runs_ok']} of {n_seeds} seeds)}}"
        if not row.get("runs_ok"):
            lines.append(f"{name} & \\multicolumn{{{len(metrics)}}}{{c}}{{failed}} \\\\")
            continue
        spread = with_std and row["runs_ok"] > 1  # one run has no standard deviation to show
        values = [_cell(cells[m][index], ranks[m][index], row.get(f"{m}_std") if spread else None, decimals)
                  for m in metrics]
        lines.append(" & ".join([name] + values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _cell(text, rank, std, decimals):
    if text is None:
        return "--"
    text = {1: r"\textbf{%s}", 2: r"\underline{%s}"}.get(rank, "%s") % text
    if std is not None and not math.isnan(std):
        text += r"\,{\scriptsize$\pm$" + f"{std:.{decimals}f}" + "}"
    return text


def _caption(dataset, n_seeds, legend, note=None):
    on = f" on {escape(dataset)}" if dataset else ""
    spread = (f"mean $\\pm$ standard deviation over {n_seeds} seeds" if n_seeds != 1 else "one seed")
    text = (f"Test metrics{on} at the best-validation epoch: {spread}. "
            + (escape(note) + " " if note else "") + "Best per column in bold, second underlined.")
    return text + (" " + legend if legend else "")


def tex_path(results_path):
    """``bench.json`` -> ``bench.tex``."""
    stem = str(results_path)
    return (stem[:-5] if stem.endswith(".json") else stem) + ".tex"


def write_latex(path, text):
    """Write the table text to ``path`` atomically."""
    with atomic_write(path) as handle:
        handle.write(text)
