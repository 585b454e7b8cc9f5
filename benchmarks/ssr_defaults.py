"""Choose SSR's shipped schedule and filter degree from finished runs, by a rule fixed before the runs.

    python benchmarks/ssr_defaults.py schedule RUN.json... [--keys=learning_rate,lr_decay,epochs] [--test]
    python benchmarks/ssr_defaults.py degree RUN.json... [--reference=16] [--test]

Each RUN.json is a ``--results`` file of one SSR run. Runs are grouped by dataset and by the values of ``--keys`` in
their configuration (``cheb_order`` for ``degree``); a group's runs are its seeds. Only validation numbers decide.

schedule
    score(candidate) = mean over the datasets of (its mean best valid score over seeds ÷ the best candidate's mean
    on that dataset). The highest score wins; every candidate whose score is within ``--tie`` (1 %) of the winner's
    counts as tied with it, and of tied candidates the cheapest (fewest epochs trained, summed over the datasets'
    seed means) is chosen. Every candidate must have runs on every dataset.
degree
    On each dataset: the reference degree's mean best valid score and sample std over seeds; the chosen degree is
    the lowest whose mean is at least the reference mean minus one reference std.

``--test`` adds the chosen candidate's test metrics (mean ± sample std over seeds): read them only after the choice.
"""

import argparse
import statistics
import sys

from lr_curves import describe, label, load


def summarise(runs, keys):
    """{(dataset, candidate): {seeds, mean, std, epochs_run, best_epoch, runs}} of best valid scores."""
    groups = {}
    for run in runs:
        groups.setdefault((run.get("dataset"), label(run, keys)), []).append(run)
    table = {}
    for key, members in groups.items():
        described = [describe(run) for run in members]
        bests = [d["best"] for d in described]
        table[key] = {"seeds": sorted(d["seed"] for d in described), "mean": statistics.mean(bests),
                      "std": statistics.stdev(bests) if len(bests) > 1 else 0.0,
                      "epochs_run": statistics.mean(d["last_epochs"] for d in described),
                      "best_epoch": statistics.mean(d["best_epochs"] for d in described), "runs": members}
    return table


def choose_schedule(table, tie=0.01):
    """(chosen candidate, {candidate: (score, cost)}) by the schedule rule of the module docstring."""
    datasets = sorted({dataset for dataset, _ in table})
    candidates = sorted({candidate for _, candidate in table})
    missing = [(c, d) for c in candidates for d in datasets if (d, c) not in table]
    if missing:
        sys.exit("error: every candidate needs runs on every dataset; missing: "
                 + "; ".join(f"{c} on {d}" for c, d in missing))
    best = {d: max(table[(d, c)]["mean"] for c in candidates) for d in datasets}
    scores = {c: (statistics.mean(table[(d, c)]["mean"] / best[d] for d in datasets),
                  sum(table[(d, c)]["epochs_run"] for d in datasets)) for c in candidates}
    top = max(score for score, _ in scores.values())
    tied = [c for c in candidates if scores[c][0] >= top * (1 - tie)]
    return min(tied, key=lambda c: (scores[c][1], -scores[c][0])), scores


def choose_degree(table, reference):
    """{dataset: chosen degree} by the degree rule of the module docstring (candidates labelled cheb_order=K)."""
    chosen = {}
    for dataset in sorted({d for d, _ in table}):
        degrees = {int(c.split("=")[1]): v for (d, c), v in table.items() if d == dataset}
        if reference not in degrees:
            sys.exit(f"error: no run with cheb_order={reference} on {dataset} (the reference degree)")
        floor = degrees[reference]["mean"] - degrees[reference]["std"]
        chosen[dataset] = min(k for k, v in degrees.items() if v["mean"] >= floor)
    return chosen


def test_metrics(runs, metrics=("recall@20", "ndcg@20")):
    cells = []
    for metric in metrics:
        values = [run["test_result"][metric] for run in runs]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{metric} {statistics.mean(values):.4f} ± {std:.4f}")
    return ", ".join(cells)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("rule", choices=["schedule", "degree"])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--keys", default="learning_rate,lr_decay,epochs", help="schedule: the candidate's keys")
    parser.add_argument("--reference", type=int, default=16, help="degree: the degree to be within noise of")
    parser.add_argument("--tie", type=float, default=0.01, help="schedule: relative score gap counted as a tie")
    parser.add_argument("--test", action="store_true", help="print the chosen candidate's test metrics")
    args = parser.parse_args()
    runs = load(args.runs)
    keys = ["cheb_order"] if args.rule == "degree" else [k for k in args.keys.split(",") if k]
    table = summarise(runs, keys)
    print("| dataset | candidate | seeds | mean best valid | ± (sample std) | mean best epoch | mean epochs run |")
    print("|---|---|---|---|---|---|---|")
    for (dataset, candidate), v in sorted(table.items(), key=lambda item: (item[0][0], -item[1]["mean"])):
        print(f"| {dataset} | {candidate} | {len(v['seeds'])} | {v['mean']:.4f} | {v['std']:.4f} | "
              f"{v['best_epoch']:.1f} | {v['epochs_run']:.1f} |")
    print()
    if args.rule == "schedule":
        chosen, scores = choose_schedule(table, args.tie)
        print("| candidate | score (mean relative best valid) | epochs trained (sum over datasets) |")
        print("|---|---|---|")
        for candidate, (score, cost) in sorted(scores.items(), key=lambda item: -item[1][0]):
            mark = " **(chosen)**" if candidate == chosen else ""
            print(f"| {candidate}{mark} | {score:.4f} | {cost:.0f} |")
        picks = {dataset: chosen for dataset, _ in table}
    else:
        picks = choose_degree(table, args.reference)
        for dataset, degree in picks.items():
            print(f"{dataset}: cheb_order={degree} (reference {args.reference})")
        picks = {dataset: f"cheb_order={degree}" for dataset, degree in picks.items()}
    if args.test:
        print()
        for dataset, candidate in sorted(picks.items()):
            print(f"test, {dataset}, {candidate}: {test_metrics(table[(dataset, candidate)]['runs'])}")


if __name__ == "__main__":
    main()
