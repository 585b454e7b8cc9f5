"""Train and evaluate one model (the plugin's ``run_recbole`` equivalent)."""

import os
import resource
import sys
import uuid
from logging import getLogger

from recbole.utils import get_local_time

from recbole_ssr.core.report import plain
from recbole_ssr.core.safe_io import (check_may_replace, check_results_name, check_writable_file, stamped,
                                      write_json_or_rescue)
from recbole_ssr.model.registry import model_name
from recbole_ssr.training import per_user
from recbole_ssr.training.build import build


def peak_rss_mb():
    """Peak resident memory of this process so far (MiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def code_version():
    """``git describe`` of the source checkout this package runs from (None outside a git checkout)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above recbole_ssr/
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def config_snapshot(config):
    return {k: plain(v) for k, v in sorted(config.final_config_dict.items())}


def _group_metrics(trainer, test_data, train_dataset, logger):
    """Test metrics per user-degree bucket and for cold-start items (the trainer's ``evaluate_groups``,
    :mod:`recbole_ssr.training.evaluation`); a failure here is logged and recorded, never allowed to lose the finished run.
    None for a trainer without that capability."""
    if not hasattr(trainer, "evaluate_groups"):
        return None
    try:
        return trainer.evaluate_groups(test_data, train_dataset)
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        logger.warning(f"group metrics failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _per_user_metrics(trainer, test_data, logger):
    """``(entry, error)``: each evaluated user's test metrics with the model's current (best-valid) weights
    (:mod:`recbole_ssr.training.per_user`); entry None for a trainer or loader without them (RecBole's own special
    trainers, sampled evaluation) or when computing them failed (error says why; the finished run is kept)."""
    if not hasattr(trainer, "evaluate_per_user"):
        return None, f"{type(trainer).__name__} does not compute per-user metrics"
    try:
        entry = trainer.evaluate_per_user(test_data)
    except Exception as exc:  # noqa: BLE001 - significance data only
        logger.warning(f"per-user test metrics failed: {type(exc).__name__}: {exc}")
        return None, f"{type(exc).__name__}: {exc}"
    return entry, None if entry is not None else "no full-ranking top-k metric (sampled evaluation?)"


def run(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, results=None,
        callback_fn=None, on_ready=None, overwrite=False):
    """Train ``model`` on ``dataset`` to early stopping, evaluate the best-valid checkpoint on the test set.

    Returns (and, with ``results=PATH``, writes as JSON) ``{model, dataset, best_valid_result, test_result,
    groups, best_epoch, epochs_run, seconds_per_epoch, valid_history, model_summary, n_params, peak_rss_mb,
    config, checkpoint}`` (``checkpoint``: the best-valid weights' file, None with ``saved=False``); ``groups`` holds the test metrics per user training-degree bucket and for cold-start items
    (:mod:`recbole_ssr.training.evaluation`); ``valid_history`` the learning curve; ``model_summary`` what the model's
    optional ``results_summary()`` reports about its best-valid weights (SSR: its band-mixing matrices); ``run_id``
    a random id of this run.
    Per-user test metrics (for the significance tests, docs/significance.md) are computed from the best-valid weights
    when the configuration key ``per_user_metrics`` is true — then the outcome carries them as ``per_user``
    (:mod:`recbole_ssr.training.per_user`; side-by-side and tuned-benchmark runs set it) — and with ``results``, which
    writes them to the sidecar ``<stem>.users.json.gz`` beside the JSON (never into the JSON itself).
    ``callback_fn(epoch, valid_score, valid_result)`` is called after every evaluation;
    ``on_ready(model, trainer, (train_data, valid_data, test_data))`` once before training (the analyses use it
    to inspect the model; after ``run`` returns, the model holds the best-valid weights).
    ``results`` must end in ``.json``; an existing file there is replaced only when it holds this run's own kind of
    output for the same model and dataset, or with ``overwrite`` (:func:`recbole_ssr.core.safe_io.check_may_replace`). A
    results file that cannot be written (a full disk) is an error naming it; the finished results are then kept in
    the temporary folder.
    """
    if results:
        check_results_name(results)
        check_writable_file(results, "--results")
        if model is not None and dataset is not None:
            check_may_replace(results, "run", [model_name(model)], dataset, overwrite=overwrite,
                              inputs={path: "a config file (--config_files)" for path in config_file_list or []})
        per_user.check_may_replace_sidecar(per_user.sidecar_path(results), overwrite)
    started_from = code_version()  # the code this run loaded (the checkout may move on while it trains)
    built = build(model, dataset, config_file_list, config_dict)
    config, model_obj, trainer = built.config, built.model, built.trainer
    train_data, valid_data, test_data = built.loaders
    logger = getLogger()
    if on_ready is not None:
        on_ready(model_obj, trainer, (train_data, valid_data, test_data))
    show = bool(config["show_progress"])
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=show, callback_fn=callback_fn)
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=show)
    groups = _group_metrics(trainer, test_data, train_data.dataset, logger)
    users, users_error = (_per_user_metrics(trainer, test_data, logger) if config["per_user_metrics"] or results
                          else (None, None))
    if getattr(trainer, "tensorboard", None) is not None:
        trainer.tensorboard.close()  # else its writer thread keeps logging into this run's folder
    outcome = {
        "model": config["model"],
        "model_source": config["model_source"],  # your own model's file.py:Class (None for shipped models)
        "dataset": config["dataset"],
        "best_valid_score": plain(best_valid_score),
        "best_valid_result": plain(dict(best_valid_result or {})),
        "test_result": plain(dict(test_result or {})),
        "groups": plain(groups),
        "best_epoch": getattr(trainer, "best_epoch", None),
        "epochs_run": getattr(trainer, "epochs_run", None),
        "seconds_per_epoch": getattr(trainer, "seconds_per_epoch", None),
        "valid_history": getattr(trainer, "valid_history", None),
        "model_summary": plain(model_obj.results_summary()) if hasattr(model_obj, "results_summary") else None,
        "n_params": int(sum(p.numel() for p in model_obj.parameters() if p.requires_grad)),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "finished_at": get_local_time(),
        "code_version": started_from,
        "config": config_snapshot(config),
        # the best-valid weights (for evaluating them again, e.g. recbole_ssr/experiments/eval_band_scale.py)
        "checkpoint": os.path.abspath(trainer.saved_model_file) if saved else None,
        "run_id": uuid.uuid4().hex,  # pairs the run with its per-user metrics in a sidecar file
    }
    if users_error:
        outcome["per_user_error"] = users_error
    logger.info(f"best valid: {outcome['best_valid_result']}")
    logger.info(f"test result: {outcome['test_result']}")
    if results:
        test = ", ".join(f"{k}={v:.4f}" for k, v in outcome["test_result"].items() if isinstance(v, (int, float)))
        write_json_or_rescue(results, stamped(outcome, "run", [outcome["model"]], outcome["dataset"]),
                             summary=f"Test: {test}." + (f" Checkpoint: {outcome['checkpoint']}." if saved else ""))
        # replaced with the results it belongs to (a run without per-user metrics leaves an empty one)
        per_user.write_sidecar(per_user.sidecar_path(results), [] if users is None else [per_user.run_record(
            outcome["model"], config["seed"], outcome["dataset"], users, outcome["run_id"])])
    if config["per_user_metrics"]:
        outcome["per_user"] = users
    return outcome


def run_recbole_ssr(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, results=None):
    """RecBole's ``run_recbole`` for this package: train ``model`` (a name, ``file.py:Class``, or a model class) on
    ``dataset`` and return what ``--results`` writes (:func:`run`), including the ``checkpoint`` path that
    :func:`recbole_ssr.load_data_and_model` loads."""
    return run(model, dataset, config_file_list, config_dict, saved=saved, results=results)


def run_one(models, dataset, spec, overrides):
    """The command line's single run (one model, one seed): :func:`run`, then its summary line."""
    outcome = run(models[0], dataset, spec.config_files, overrides, results=spec.results, overwrite=spec.overwrite)
    test = ", ".join(f"{k}={v:.4f}" for k, v in outcome["test_result"].items())
    print(f"{outcome['model']} on {outcome['dataset']}: best epoch {outcome['best_epoch']}, "
          f"{outcome['seconds_per_epoch']:.2f} s/epoch; test {test}")
    return outcome
