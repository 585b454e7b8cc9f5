"""``python -m recbole_ssr.experiments.per_user_backfill RESULT.json... [--overwrite]``: per-user test metrics for
runs that have none - made before runs kept them, or with ``per_user_metrics: False`` - recomputed from each run's
best-valid checkpoint, so that their tables get significance tests too (docs/significance.md).

For every single-run ``--results`` JSON given: :func:`recbole_ssr.training.build.load_trained` on its
``checkpoint``, the trainer's ``evaluate_per_user`` on the test set, and a record in the sidecar
``<stem>.users.json.gz`` beside it (:mod:`recbole_ssr.training.per_user`). The recomputed metrics must give back the
run's own test metrics (their means, to RecBole's rounding): a checkpoint that no longer reproduces its run is an
error naming it, never a table built on other numbers (the other runs still get theirs). This is also what a model
whose evaluation is random gives: LGMRec with ``gumbel_at_eval: True`` (the authors' behaviour) scores differently
at every evaluation, so its runs keep per-user metrics only when they are made with them. A run whose sidecar
already holds its record is skipped.
"""

import os
import sys

from recbole_ssr.core.errors import ConfigError, RecboleSSRError, one_line_parser
from recbole_ssr.core.report import load_runs
from recbole_ssr.training import per_user


def single_run(path):
    """The results of one run (``--results`` of a single run) at ``path`` (read by
    :func:`~recbole_ssr.core.report.load_runs`), checked to have a checkpoint."""
    found = load_runs([path])
    if len(found) != 1 or "test_result" not in found[0] or "checkpoint" not in found[0]:
        raise ConfigError(f"{path}: not the --results JSON of one run (no 'test_result' and 'checkpoint'); "
                          "side-by-side batches keep their per-user metrics themselves.")
    payload = found[0]
    if not payload["checkpoint"] or not os.path.isfile(payload["checkpoint"]):
        raise ConfigError(f"{path}: its checkpoint ({payload['checkpoint']!r}) is not a file: the run was made "
                          "without saving, or its checkpoint was moved.")
    return payload


def has_record(sidecar, payload):
    if not os.path.isfile(sidecar):
        return False
    entries, _ = per_user.entries_for_runs([payload], [sidecar])
    return bool(entries)


def recompute(path, payload):
    """The per-user entry of the run at ``path`` from its checkpoint, checked against its test metrics."""
    from recbole_ssr.training.build import load_trained

    built = load_trained(payload["checkpoint"])
    entry = built.trainer.evaluate_per_user(built.test_data)
    if entry is None:
        raise ConfigError(f"{path}: {payload['model']}'s evaluation gives no per-user metrics (sampled evaluation?).")
    decimals = int(built.config["metric_decimal_place"] or 4)
    recomputed = per_user.means(entry)
    differ = {k: (v, round(recomputed[k], decimals)) for k, v in payload["test_result"].items()
              if k in recomputed and abs(round(recomputed[k], decimals) - float(v)) > 10 ** -decimals / 2}
    if differ:
        raise ConfigError(f"{path}: its checkpoint does not reproduce the run's test metrics (recorded vs now: "
                          f"{differ}); the data or the code changed since. Nothing was written for it.")
    return entry


def backfill(paths, overwrite=False):
    """Write the sidecar records of ``paths``; returns {path: "written" | "already there"}."""
    runs = {path: single_run(path) for path in paths}  # every input checked before the first (slow) evaluation
    for path in runs:
        per_user.check_may_replace_sidecar(per_user.sidecar_path(path), overwrite)
    done, failed = {}, []
    for path, payload in runs.items():
        sidecar = per_user.sidecar_path(path)
        if has_record(sidecar, payload):
            done[path] = "already there"
        else:
            try:
                entry = recompute(path, payload)
            except RecboleSSRError as exc:  # the other runs still get theirs
                failed.append(str(exc))
                continue
            record = per_user.run_record(payload["model"], payload["seed"], payload["dataset"], entry,
                                         payload.get("run_id"))
            per_user.add_to_sidecar(sidecar, [record], replace_unreadable=overwrite)
            done[path] = "written"
        print(f"{path}: per-user metrics {done[path]} ({sidecar})", flush=True)
    if failed:
        raise ConfigError(f"{len(failed)} of {len(runs)} run(s) got no per-user metrics: " + " ".join(failed))
    return done


def main(argv=None):
    parser = one_line_parser(prog="python -m recbole_ssr.experiments.per_user_backfill",
                             description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("files", nargs="+", help="--results JSONs of single runs (with their checkpoints)")
    parser.add_argument("--overwrite", action="store_true", help="replace a sidecar file that is not ours")
    try:
        args = parser.parse_args(argv)
        backfill(args.files, args.overwrite)
    except RecboleSSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
