"""Command line of ``run_recbole_ssr.py``: one run, several models side by side, or a hyper-parameter search."""

import errno
import os
import sys

from recbole_ssr.core.errors import ConfigError, RecboleSSRError, one_line_parser
from recbole_ssr.config.values import parse_value
from recbole_ssr.core.spec import ExperimentSpec

DEFAULT_DATASET = "ml-100k"
DEFAULT_MODEL = "SSR"


def build_parser():
    parser = one_line_parser(
        prog=("recbole-ssr" if os.path.basename(sys.argv[0] or "").startswith("recbole-ssr")
              else "run_recbole_ssr.py"),
        allow_abbrev=False,  # --seed=1 is a config key, not an abbreviation of --seeds
        description="Train/evaluate SSR, multimodal baselines and RecBole models; compare them; tune them. "
                    "Any other --key=value sets a configuration key.",
    )
    parser.add_argument("--model", "-m", default=None,
                        help="model name, or several comma-separated for a side-by-side run (default: SSR); your own "
                             "model as path/to/file.py:ClassName or package.module:ClassName")
    parser.add_argument("--dataset", "-d", default=None, help=f"dataset name (default: {DEFAULT_DATASET}, embedded)")
    parser.add_argument("--config_files", default=None,
                        help="extra yaml config files (comma- or space-separated), applied after properties/")
    parser.add_argument("--results", default=None,
                        help="write the results as JSON to this path (a name ending in .json; side-by-side and tuned "
                             "runs also write <name>.csv and <name>.runs.jsonl beside it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow --results to replace a file that is not this command's own earlier output (a "
                             "file recbole-ssr did not write, or results of another kind, model or dataset)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="run every model with this many seeds (seed, seed+1, ...) and aggregate mean ± std")
    parser.add_argument("--tune", default=None,
                        help="search-space yaml: run a Ray Tune hyper-parameter search; 'auto': each model's "
                             "properties/search/<Model>.yaml. With several models or --seeds > 1: the tuned "
                             "benchmark (every model searched with the same budget, each winner run with --seeds)")
    parser.add_argument("--num_samples", type=int, default=None,
                        help="trials of the search (--tune; the tuned benchmark's budget per model, default 16)")
    parser.add_argument("--scheduler", default=None, choices=["asha", "fifo"], help="trial scheduler (--tune)")
    parser.add_argument("--grace_period", type=int, default=None,
                        help="ASHA: epochs every trial runs before it may be stopped (--tune)")
    parser.add_argument("--reduction_factor", type=float, default=None,
                        help="ASHA: the best 1/reduction_factor of the trials at each rung go on (--tune)")
    parser.add_argument("--search_alg", default=None, choices=["random", "optuna"],
                        help="how trials are drawn (--tune): random, or optuna (Optuna's TPE, model-based)")
    parser.add_argument("--address", default=None,
                        help="existing Ray cluster: 'auto' or ray://host:port; searches, seeded runs and "
                             "side-by-side runs then run on it")
    parser.add_argument("--cpus_per_run", type=float, default=None,
                        help="CPUs per run on Ray (side-by-side with --address, seeded runs of the tuned "
                             "benchmark; default 1)")
    parser.add_argument("--gpus_per_run", type=float, default=None,
                        help="GPUs per run on Ray, fractions allowed (default 0 = CPU)")
    parser.add_argument("--num_cpus", type=int, default=None, help="CPUs of the local Ray started by --tune")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="FOLDER",
                        help="resume an interrupted search (--tune): the latest unfinished one of this model and "
                             "dataset, or the search FOLDER given")
    # --- search resources and output (recbole_ssr/experiments/tune/) ---
    parser.add_argument("--cpus_per_trial", type=float, default=None, help="CPUs per trial (--tune; default 1)")
    parser.add_argument("--gpus_per_trial", type=float, default=None,
                        help="GPUs per trial, fractions allowed, e.g. 0.5 (--tune; default 0 = CPU)")
    parser.add_argument("--output", default=None,
                        help="folder of the searches' timestamped result folders (--tune; default tune_results/)")
    parser.add_argument("--analysis", default=None, choices=["groups", "ablation", "bands", "sensitivity"],
                        help="run one of the paper's analyses")
    parser.add_argument("--analysis_from", default=None,
                        help="--analysis=groups only: build the report from existing results files (--results JSONs, "
                             "side-by-side JSONs, runs.jsonl; comma separated) instead of training")
    parser.add_argument("--analysis_output", default=None,
                        help="folder of the analyses' timestamped output folders (--analysis; default "
                             "analysis_results/)")
    return parser


def parse_args(argv):
    """The command line as ``(ExperimentSpec, overrides)``: the runner's own options, and every other
    ``--key=value`` as a configuration key."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    overrides = {}
    for item in unknown:
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(
                f"cannot parse argument '{item}': configuration keys are given as --key=value "
                "(run with --help for the runner's own options)."
            )
        key, value = item[2:].split("=", 1)
        overrides[key] = parse_value(value)
    if args.config_files:
        files = [f for f in args.config_files.replace(",", " ").split() if f]
        for path in files:
            if os.path.isdir(path):
                raise ConfigError(f"config file '{path}' (from --config_files) is a folder, but a yaml file is "
                                  "expected; name the file inside it.")
        args.config_files = [os.path.abspath(f) for f in files]
    spec = ExperimentSpec.from_namespace(args)
    check_options(spec)
    return spec, overrides


def check_options(spec):
    """The runner's own options, before anything is loaded: names not empty, no model twice, counts and ASHA
    settings within range (the search settings' own rules, :func:`recbole_ssr.config.search_space.setting_error`)."""
    from recbole_ssr.config.search_space import setting_error

    for option in ("model", "dataset"):
        value = getattr(spec, option)
        if value is not None and not value.strip():
            example = "SSR" if option == "model" else DEFAULT_DATASET
            raise ConfigError(f"--{option} is empty: give a name (e.g. --{option}={example}), or leave --{option} out "
                              "for the default.")
    if spec.model is not None:
        names = [m.strip() for m in spec.model.split(",")]
        if not all(names):
            raise ConfigError(f"--model={spec.model} has an empty name between commas; write e.g. --model=SSR,BPR.")
        from recbole_ssr.model.registry import canonical_model, model_name

        # your own models (file.py:Class) with absolute paths: what every process and Ray node resolves again
        spec.model = ",".join(canonical_model(m) for m in names)
        names = [model_name(m) for m in spec.model.split(",")]
        twice = sorted({m for m in names if names.count(m) > 1})
        if twice:
            raise ConfigError(f"--model={spec.model} names {', '.join(twice)} more than once; name each model once "
                              "(--seeds=N runs every model with N seeds).")
    if spec.seeds < 1:
        raise ConfigError(f"--seeds={spec.seeds}: expected a whole number >= 1 (the number of seeds every model runs "
                          "with).")
    for key in ("num_samples", "grace_period", "reduction_factor", "cpus_per_trial", "gpus_per_trial"):
        error = setting_error(key, getattr(spec, key), f"--{key}={getattr(spec, key)}")
        if error is not None:
            raise error
    if spec.results is not None:
        from recbole_ssr.core.safe_io import check_results_name

        check_results_name(spec.results)


def mode(kind):
    """The function that runs a command of this kind; every one takes ``(models, dataset, spec, overrides)``.
    Imported on demand (they import torch and RecBole), so that --help and bad options stay fast."""
    if kind == "tuned benchmark":
        from recbole_ssr.experiments.tune.tuned_benchmark import run_tuned_benchmark as runner
    elif kind == "search":
        from recbole_ssr.experiments.tune.driver import run_search as runner
    elif kind.endswith("analysis"):
        from recbole_ssr.experiments.analysis import run_analysis as runner
    elif kind == "side-by-side":
        from recbole_ssr.experiments.side_by_side import run_side_by_side as runner
    else:
        from recbole_ssr.experiments.run import run_one as runner
    return runner


def results_kind(spec, models):
    """The kind of command: what it writes to ``--results`` (the provenance marker's kind of output) and the mode
    that runs it (:func:`mode`)."""
    if spec.tune:
        return "tuned benchmark" if spec.tune == "auto" or len(models) > 1 or spec.seeds > 1 else "search"
    if spec.analysis:
        return f"{spec.analysis} analysis"
    return "side-by-side" if len(models) > 1 or spec.seeds > 1 else "run"


def check_results_target(spec, models, dataset):
    """``--results`` can be written, and replacing it is allowed (:func:`recbole_ssr.core.safe_io.check_may_replace`):
    checked before anything is trained."""
    from recbole_ssr.core.safe_io import check_may_replace, check_writable_file
    from recbole_ssr.model.registry import model_name

    models = [model_name(m) for m in models]  # results name your own models by class
    check_writable_file(spec.results, "--results")
    inputs = {path: "a config file (--config_files)" for path in spec.config_files or []}
    inputs.update({path: "a results file it reads (--analysis_from)" for path in spec.analysis_from or []})
    if spec.tune and spec.tune != "auto":
        inputs[spec.tune] = "the search space (--tune)"
    kind = results_kind(spec, models)
    check_may_replace(spec.results, kind, models, dataset, overwrite=spec.overwrite, inputs=inputs)
    if kind in ("side-by-side", "tuned benchmark"):
        from recbole_ssr.core.safe_io import check_appendable_log, check_may_replace_table

        stem = spec.results[:-len(".json")]
        check_may_replace_table(f"{stem}.csv", "model,runs_ok,runs_failed", "--results table", spec.overwrite)
        if kind == "side-by-side":
            check_appendable_log(f"{stem}.runs.jsonl", "the runs log")


#: errors of the machine rather than of the code (a full disk, a read-only or missing folder): one line, no traceback
ENVIRONMENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                                errno.EDQUOT, errno.EFBIG, errno.ENOENT})


def main(argv=None):
    """``run_recbole_ssr.py`` and the ``recbole-ssr`` console script; returns the exit status."""
    import recbole_ssr

    if recbole_ssr.RECBOLE_PROBLEM:
        print(f"error: {recbole_ssr.RECBOLE_PROBLEM}", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else argv
    try:
        spec, overrides = parse_args(argv)
        if spec.tune:
            from recbole_ssr.core.paths import resolve_shipped

            spec.tune = resolve_shipped(spec.tune)  # the documented properties/search/<Model>.yaml, from anywhere
        if "show_progress" not in overrides and sys.stdout.isatty():
            overrides["show_progress"] = True
        if spec.analysis_from:
            if spec.analysis != "groups":
                raise ConfigError("--analysis_from builds a report from finished runs: it works with "
                                  "--analysis=groups only (the other analyses train their own variants).")
            from recbole_ssr.core.report import load_runs

            spec.analysis_from = [f for f in spec.analysis_from.replace(",", " ").split() if f]
            found = load_runs(spec.analysis_from)
            if not any(r.get("status") == "ok" for r in found):
                raise ConfigError(f"--analysis_from: {', '.join(spec.analysis_from)} hold no finished run "
                                  f"({len(found)} run(s), none with status ok); pass the results of finished runs, or "
                                  "leave --analysis_from out to train them.")
            spec.model = spec.model or ",".join(dict.fromkeys(r.get("model_source") or r["model"] for r in found))
            spec.dataset = spec.dataset or found[0].get("dataset")
        models = [m.strip() for m in (spec.model or DEFAULT_MODEL).split(",") if m.strip()]
        if any(":" in m for m in models):  # your own models: their keys on the command line reach every run
            from recbole_ssr.config.validation import declare_model_keys

            overrides = declare_model_keys(models, overrides)
        dataset = spec.dataset or DEFAULT_DATASET
        if spec.results:
            check_results_target(spec, models, dataset)
        kind = results_kind(spec, models)
        if kind == "tuned benchmark" and spec.tune != "auto" and len(models) > 1:
            raise ConfigError(f"--tune={spec.tune} is one search space; with several models use --tune=auto "
                              "(each model's properties/search/<Model>.yaml).")
        mode(kind)(models, dataset, spec, overrides)
    except RecboleSSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        from recbole_ssr.model.registry import raised_in_model_code

        if exc.errno not in ENVIRONMENT_ERRNOS or raised_in_model_code(exc):  # your model's own bug: its traceback
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}. Check that the path exists, that you may write there and that "
              "the disk has space, then run again.", file=sys.stderr)
        return 2
    return 0
