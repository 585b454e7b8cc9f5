"""Choose SSR's ``eval_band_scale`` on validation, after training (docs/ssr.md, "Extensions").

    python -m recbole_ssr.experiments.eval_band_scale RUN... [--high=1,0.75,0.5,0.25,0] [--candidates=JSON]
        [--results=eval_band_scale.json]

Each RUN is a trained SSR: a run's ``--results`` JSON (its ``checkpoint`` entry) or a checkpoint file
(``saved/SSR-....pth``). A checkpoint carries its own configuration (dataset, data path, model settings), so
nothing else is needed. The trained weights are evaluated once per candidate list of band multipliers (low band to
high band) on the validation and the test set; training is not repeated. The candidate with the best mean
validation score over the runs (typically one configuration's seeds) is chosen — one setting for all of them, as a
yaml value would be — with the trained model itself (every multiplier 1) as the first candidate, so it stays
chosen unless a candidate beats it. The test set plays no part in the choice; its metrics are shown beside.

Candidates: ``--high`` multipliers for the highest band (the other bands at 1), or ``--candidates`` as a JSON list of
lists, e.g. ``'[[1, 1, 0.5], [1, 0.5, 0.5]]'``.

A results JSON that is not a run's, a file that is not a checkpoint of this package, and a checkpoint trained on
another version of the dataset (its recorded training-data fingerprint, or its weights' shapes, differ from the
dataset's files now) are each one ``error:`` line. ``--results`` follows the runner's rule: a ``.json`` name, and an
existing file is replaced only when it is this tool's own output (``--overwrite`` otherwise).
"""

import json
import os
import sys


from recbole_ssr.core.errors import ConfigError, RecboleSSRError, one_line_parser
from recbole_ssr.core.report import markdown_table, mean_std, plain
from recbole_ssr.core.safe_io import check_may_replace, check_results_name, check_writable_file, stamped, write_json

KIND = "eval_band_scale"

TEST_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def checkpoint_path(run):
    """The checkpoint of ``run``: the file itself, or the ``checkpoint`` entry of a results JSON."""
    if not os.path.isfile(run):
        raise ConfigError(f"{run}: no such file (expected a run's --results JSON or a saved SSR checkpoint .pth).")
    if not run.endswith(".json"):
        return run
    try:
        with open(run, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{run}: not a complete JSON file ({exc}); the file is truncated or not a run's --results "
                          "JSON. Pass the run's results JSON or its checkpoint .pth.") from None
    if not isinstance(payload, dict) or "checkpoint" not in payload:
        raise ConfigError(f"{run}: not the --results JSON of one run (it has no 'checkpoint' entry); pass the results "
                          "JSON of a single SSR run or its checkpoint .pth.")
    path = payload["checkpoint"]
    if not path or not os.path.isfile(path):
        raise ConfigError(f"{run}: its 'checkpoint' entry ({path!r}) is not a file: the run was made without saving "
                          "(saved=False) or its checkpoint was moved; pass the .pth file instead.")
    return path


def read_ssr_checkpoint(path):
    """The checkpoint at ``path`` (a clear error for a file that is not an SSR checkpoint of this package)."""
    from recbole_ssr.training.checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path)
    model_name = checkpoint["config"]["model"]
    if model_name != "SSR":
        raise ConfigError(f"{path}: a {model_name} checkpoint; eval_band_scale is an SSR setting.")
    return checkpoint


def candidate_lists(args, num_bands):
    if args.candidates:
        try:
            lists = json.loads(args.candidates)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--candidates: not JSON ({exc}); expected a list of lists, e.g. '[[1, 1, 0.5]]'.")
        if not isinstance(lists, list) or not all(isinstance(c, list) for c in lists):
            raise ConfigError(f"--candidates: expected a JSON list of lists of {num_bands} multipliers, got {lists!r}.")
    else:
        try:
            highs = [float(v) for v in args.high.split(",")]
        except ValueError:
            raise ConfigError(f"--high: expected comma-separated numbers, e.g. 1,0.5,0; got {args.high!r}.")
        lists = [[1.0] * (num_bands - 1) + [h] for h in highs]
    ones = [1.0] * num_bands
    unique = [ones]
    for values in lists:
        # numbers as floats (so 1 and 1.0 are one candidate); anything else is left for set_eval_band_scale to refuse
        values = [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in values]
        if values not in unique:
            unique.append(values)
    return unique


def evaluate_run(path, args):
    from recbole_ssr.training.build import load_trained

    built = load_trained(path)
    config, model, trainer, valid_data, test_data = (built.config, built.model, built.trainer, built.valid_data,
                                                     built.test_data)
    metric = config["valid_metric"].lower()
    rows = []
    for scale in candidate_lists(args, model.num_bands):
        model.set_eval_band_scale(scale)  # validated here: a wrong length or a negative value is a clear error
        valid = plain(dict(trainer.evaluate(valid_data, load_best_model=False)))
        test = plain(dict(trainer.evaluate(test_data, load_best_model=False)))
        rows.append({"scale": scale, "valid": valid, "test": test})
        print(f"{os.path.basename(path)} (seed {config['seed']}) eval_band_scale {scale}: valid {metric} "
              f"{valid.get(metric, float('nan')):.4f}, test " + ", ".join(f"{k} {float(v):.4f}" for k, v in test.items()),
              flush=True)
    return {"checkpoint": os.path.abspath(path), "seed": config["seed"], "dataset": config["dataset"],
            "valid_metric": metric, "candidates": rows}


def choose(runs):
    """(the chosen multipliers, per candidate {scale, valid mean/std, test means/stds}) by mean valid score."""
    metric = runs[0]["valid_metric"]
    if any(run["valid_metric"] != metric or run["dataset"] != runs[0]["dataset"] for run in runs):
        raise ConfigError("the runs differ in dataset or valid_metric: choose for one configuration at a time.")
    if any([c["scale"] for c in run["candidates"]] != [c["scale"] for c in runs[0]["candidates"]] for run in runs):
        raise ConfigError("the runs have different numbers of bands (band_num): choose for one configuration at a time.")
    summary = []
    for k, candidate in enumerate(runs[0]["candidates"]):
        entry = {"scale": candidate["scale"], "valid": mean_std([run["candidates"][k]["valid"][metric] for run in runs])}
        for name in TEST_METRICS:
            entry[name] = mean_std([run["candidates"][k]["test"].get(name) for run in runs])
        summary.append(entry)
    best = max(range(len(summary)), key=lambda k: (summary[k]["valid"][0], -k))  # ties: the earlier (trained first)
    return summary[best]["scale"], summary


def table(runs, summary, chosen):
    metric = runs[0]["valid_metric"]

    def cell(pair):
        return f"{pair[0]:.4f} ± {pair[1]:.4f}"
    rows = [[str(e["scale"]) + (" (trained)" if k == 0 else ""), cell(e["valid"])]
            + [cell(e[name]) for name in TEST_METRICS] + ["**chosen**" if e["scale"] == chosen else ""]
            for k, e in enumerate(summary)]
    return markdown_table(["eval_band_scale", f"valid {metric}"] + [f"test {n}" for n in TEST_METRICS] + [""], rows)


def main(argv=None):
    parser = one_line_parser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="results JSONs of SSR runs, or SSR checkpoint files")
    parser.add_argument("--high", default="1,0.75,0.5,0.25,0", help="multipliers of the highest band to try")
    parser.add_argument("--candidates", help="JSON list of multiplier lists (replaces --high)")
    parser.add_argument("--results", help="write every evaluation and the choice as JSON here")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow --results to replace a file that is not this tool's own earlier output")
    try:
        args = parser.parse_args(argv)
        paths = [checkpoint_path(run) for run in args.runs]
        dataset = [read_ssr_checkpoint(path)["config"]["dataset"] for path in paths][0]
        if args.results:
            check_results_name(args.results)
            check_writable_file(args.results, "--results")
            check_may_replace(args.results, KIND, ["SSR"], dataset, overwrite=args.overwrite,
                              inputs={run: "an input of this tool" for run in args.runs})
        runs = [evaluate_run(path, args) for path in paths]
        chosen, summary = choose(runs)
    except RecboleSSRError as exc:
        sys.exit(f"error: {exc}")
    print(f"\n{len(runs)} run(s), mean ± std over them; chosen by valid {runs[0]['valid_metric']}: "
          f"eval_band_scale {chosen}\n")
    print(table(runs, summary, chosen))
    if args.results:
        write_json(args.results, stamped({"chosen": chosen, "summary": summary, "runs": runs}, KIND, ["SSR"],
                                         runs[0]["dataset"]))
    return chosen


if __name__ == "__main__":
    main()
