"""Validation learning curves of finished runs: a markdown table per candidate setting, and one plot.

    python benchmarks/lr_curves.py RUN.json... [--keys=learning_rate,lr_decay] [--png=curves.png]

Each RUN.json is a ``--results`` file of one run (it carries ``valid_history``: the valid score after every
evaluation). Runs are grouped by the values of ``--keys`` in their configuration (one group = one candidate; its
runs are its seeds). Per run the table gives the best valid score and its epoch, the score at a few fixed epochs,
the last score and the drop from the peak to the last evaluation (a collapse after the peak shows up there), and
whether early stopping ended the run before its epoch cap. Only validation numbers are shown: this is a tool for
choosing settings, and the test set plays no part in it.
"""

import argparse
import json
import os
import statistics
import sys

CHECKPOINTS = (5, 10, 20, 40, 60, 80, 100)


def load(paths):
    runs = []
    for path in paths:
        with open(path) as handle:
            result = json.load(handle)
        if not result.get("valid_history"):
            sys.exit(f"error: {path} has no valid_history (a results file written by a run of this version is needed)")
        runs.append(dict(result, path=path))
    return runs


def label(run, keys):
    config = run.get("config", {})
    return ", ".join(f"{key}={config.get(key)}" for key in keys)


def describe(run):
    history = run["valid_history"]
    scores = {h["epoch"] + 1: h["valid_score"] for h in history}  # keyed by epochs trained
    best_epochs, best = max(scores.items(), key=lambda item: (item[1], -item[0]))
    last_epochs, last = max(scores), scores[max(scores)]
    cap = run.get("config", {}).get("epochs")
    return {"seed": run.get("config", {}).get("seed"), "best": best, "best_epochs": best_epochs,
            "last": last, "last_epochs": last_epochs, "drop": best - last,
            "stopped_early": cap is not None and last_epochs < int(cap), "at": scores}


def table(runs, keys, metric):
    groups = {}
    for run in runs:
        groups.setdefault(label(run, keys), []).append(describe(run))
    header = (["candidate", "seed", f"best valid {metric}", "at epoch"] + [f"@{e}" for e in CHECKPOINTS]
              + ["last (epoch)", "peak − last", "early-stopped"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary = []
    for name, described in groups.items():
        for d in sorted(described, key=lambda x: x["seed"] or 0):
            cells = [name, str(d["seed"]), f"{d['best']:.4f}", str(d["best_epochs"])]
            cells += [f"{d['at'][e]:.4f}" if e in d["at"] else "–" for e in CHECKPOINTS]
            cells += [f"{d['last']:.4f} ({d['last_epochs']})", f"{d['drop']:.4f}", "yes" if d["stopped_early"] else "no"]
            lines.append("| " + " | ".join(cells) + " |")
        bests = [d["best"] for d in described]
        summary.append((name, statistics.mean(bests), statistics.stdev(bests) if len(bests) > 1 else 0.0,
                        statistics.mean(d["best_epochs"] for d in described),
                        max(d["drop"] for d in described), len(described)))
    lines += ["", "| candidate | seeds | mean best valid | ± (sample std) | mean best epoch | worst peak − last |",
              "|---|---|---|---|---|---|"]
    for name, mean, std, epoch, drop, count in sorted(summary, key=lambda s: -s[1]):
        lines.append(f"| {name} | {count} | {mean:.4f} | {std:.4f} | {epoch:.0f} | {drop:.4f} |")
    return "\n".join(lines), groups


def plot(groups_runs, path, metric):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, runs) in enumerate(groups_runs.items()):
        for number, run in enumerate(runs):
            epochs = [h["epoch"] + 1 for h in run["valid_history"]]
            scores = [h["valid_score"] for h in run["valid_history"]]
            axis.plot(epochs, scores, color=colours[index % len(colours)], linestyle="-" if number == 0 else "--",
                      label=name if number == 0 else None, linewidth=1.2)
    axis.set_xlabel("epochs trained")
    axis.set_ylabel(f"valid {metric}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    staging = path + ".tmp.png"
    figure.savefig(staging, dpi=110)
    os.replace(staging, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--keys", default="learning_rate,lr_decay")
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    runs = load(args.runs)
    keys = [k for k in args.keys.split(",") if k]
    metric = runs[0].get("config", {}).get("valid_metric", "valid score")
    text, _ = table(runs, keys, metric)
    print(text)
    if args.png:
        grouped = {}
        for run in runs:
            grouped.setdefault(label(run, keys), []).append(run)
        plot(grouped, args.png, metric)


if __name__ == "__main__":
    main()
