"""PNG charts of the analyses (matplotlib's Agg canvas directly: no display, no pyplot global state)."""

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recbole_ssr.core.safe_io import save_with

DPI = 110


def _figure(width=7.0, height=4.2, ncols=1, nrows=1):
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, axes


def _save(figure, path):
    figure.tight_layout()
    save_with(path, lambda handle: figure.savefig(handle, format="png"))
    return path


def _split(values):
    """[(mean, std) or number or None] -> (means, stds) arrays (NaN for missing)."""
    means, stds = [], []
    for value in values:
        if isinstance(value, (tuple, list)):
            mean, std = value
        else:
            mean, std = value, 0.0
        means.append(np.nan if mean is None else float(mean))
        stds.append(0.0 if std is None or (isinstance(std, float) and math.isnan(std)) else float(std))
    return np.asarray(means), np.asarray(stds)


def grouped_bars(path, categories, series, ylabel="", title="", horizontal_line=None):
    """Bars per category, one colour per series; ``series``: {name: [(mean, std) per category]}."""
    figure, axes = _figure(width=max(6.0, 1.0 + 0.9 * len(categories) * max(1, len(series)) ** 0.5))
    ax = axes[0, 0]
    x = np.arange(len(categories))
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        means, stds = _split(values)
        ax.bar(x + (k - (len(series) - 1) / 2) * width, np.nan_to_num(means), width, yerr=stds, capsize=3,
               label=str(name))
    if horizontal_line is not None:
        ax.axhline(horizontal_line, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([str(c) for c in categories], rotation=20 if len(categories) > 4 else 0, ha="right"
                       if len(categories) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(figure, path)


def lines(path, panels, xlabel="", ylabel="", title="", categorical_x=False):
    """One subplot per panel; ``panels``: {panel title: (x values, {series: [(mean, std) per x]})}."""
    n = max(1, len(panels))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    figure, axes = _figure(width=4.2 * ncols, height=3.4 * nrows, ncols=ncols, nrows=nrows)
    for index, (panel, (xs, series)) in enumerate(panels.items()):
        ax = axes[index // ncols, index % ncols]
        positions = np.arange(len(xs)) if categorical_x else np.asarray(xs, dtype=float)
        for name, values in series.items():
            means, stds = _split(values)
            ax.errorbar(positions, means, yerr=stds, marker="o", markersize=3, capsize=2, label=str(name),
                        linestyle="--" if str(name).endswith("(random)") else "-")  # baselines dashed
        if categorical_x:
            ax.set_xticks(positions)
            ax.set_xticklabels([_short(v) for v in xs])
        ax.set_title(str(panel), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for index in range(n, nrows * ncols):
        axes[index // ncols, index % ncols].set_visible(False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def heatmap(path, matrix, row_labels, col_labels, title="", fmt="{:.3f}", cmap="viridis"):
    matrix = np.asarray(matrix, dtype=float)
    figure, axes = _figure(width=1.6 + 1.1 * len(col_labels), height=1.4 + 0.6 * len(row_labels))
    ax = axes[0, 0]
    image = ax.imshow(matrix, cmap=cmap, aspect="auto")
    ax.set_xticks(np.arange(len(col_labels)))
    ax.set_xticklabels([str(c) for c in col_labels])
    ax.set_yticks(np.arange(len(row_labels)))
    ax.set_yticklabels([str(r) for r in row_labels])
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if np.isfinite(matrix[i, j]):
                ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=8, color="white"
                        if matrix[i, j] < np.nanmean(matrix) else "black")
    figure.colorbar(image, ax=ax)
    ax.set_title(title)
    return _save(figure, path)


def _short(value):
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
