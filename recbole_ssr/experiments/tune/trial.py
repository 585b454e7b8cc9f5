"""The trial of a search: the Ray Tune function trainable that runs inside a Ray worker (one training run that
reports its validation result after every evaluation), and the re-evaluation of a trial's checkpoint.

A worker that unpickles the trainable imports ``recbole_ssr`` first, which applies the RecBole fixes
(:mod:`recbole_ssr.core.compat`).
"""

import glob
import os
import shutil


from recbole_ssr.config.search_space import apply_params
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.core.report import plain
from recbole_ssr.core.safe_io import write_json
from recbole_ssr.experiments.run import run
from recbole_ssr.experiments.runner import node_note, set_torch_threads
from recbole_ssr.training.stopping import BestTracker
from recbole_ssr.training.build import build

CHECKPOINTS = "checkpoints"
# keys a trial sets for itself: never part of best.yaml
TRIAL_KEYS = ("checkpoint_dir", "gpu_id", "show_progress")


def trial_config_dict(base, params, trial_dir):
    """The config_dict of one trial: base (fixed keys, overrides, absolute paths) + sampled params + own dirs."""
    import ray

    config_dict = apply_params(base["config_dict"], plain(params))
    config_dict["checkpoint_dir"] = os.path.join(trial_dir, CHECKPOINTS)
    config_dict["show_progress"] = False
    try:
        gpu_ids = ray.get_gpu_ids()
    except Exception:  # outside a Ray worker
        gpu_ids = []
    # RecBole writes gpu_id into CUDA_VISIBLE_DEVICES: keep Ray's assignment, and no GPU for CPU trials.
    config_dict["gpu_id"] = ",".join(str(g) for g in gpu_ids)
    return config_dict


def _node_id():
    """The Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None


def trial_main(params, base):
    """Ray Tune function trainable: one training run, reporting valid after every evaluation."""
    from ray import tune

    # Our own folder per trial (checkpoints, RecBole's log/, outcome.json), under the search folder rather than
    # Ray's per-session working directory, so it outlives the Ray session and sits on the same (shared) storage.
    trial_dir = os.path.join(base["trials_dir"], tune.get_context().get_trial_id())
    shutil.rmtree(os.path.join(trial_dir, CHECKPOINTS), ignore_errors=True)  # a restarted trial starts afresh
    os.makedirs(trial_dir, exist_ok=True)
    os.chdir(trial_dir)
    set_torch_threads(base["cpus_per_trial"])
    config_dict = trial_config_dict(base, params, trial_dir)
    strict = bool(config_dict.get("early_stop_strict", base["early_stop_strict"]))
    tracker = BestTracker(bigger=base["bigger"], strict=strict)

    node_id = _node_id()

    def saved_checkpoint():
        """The trial's checkpoint path as seen on its own node (the driver may not see this node's disk)."""
        found = sorted(glob.glob(os.path.join(config_dict["checkpoint_dir"], "*.pth")))
        return found[-1] if found else None

    def report(epoch, valid_score, valid_result):
        tracker.update(epoch, valid_score, valid_result)
        tune.report({
            "node_id": node_id,
            "checkpoint": saved_checkpoint(),
            "epoch": int(epoch) + 1,
            "valid_score": float(valid_score),
            "best_valid_score": tracker.score,
            "best_epoch": tracker.epoch,
            "valid": plain(dict(valid_result)),
            "best_valid": tracker.result,
            "finished": False,
        })

    try:
        outcome = run(base["model"], base["dataset"], base["config_files"], config_dict, saved=True,
                      callback_fn=report)
    except ConfigError as exc:  # e.g. a model file missing on this node: say which node
        raise ConfigError(f"{exc}{node_note(node_id)}") from None
    write_json(os.path.join(trial_dir, "outcome.json"), plain(outcome))
    tune.report({
        "node_id": node_id,
        "checkpoint": saved_checkpoint(),
        "epoch": int(outcome["epochs_run"] or 0),
        "best_valid_score": outcome["best_valid_score"],
        "best_epoch": outcome["best_epoch"],
        "best_valid": outcome["best_valid_result"],
        "test": outcome["test_result"],
        "seconds_per_epoch": outcome["seconds_per_epoch"],
        "n_params": outcome["n_params"],
        "finished": True,
    })


def evaluate_checkpoint(model, dataset, config_file_list, config_dict, checkpoint):
    """Valid and test results of a saved checkpoint (a trial's best-valid model), without training."""
    built = build(model, dataset, config_file_list, config_dict)
    trainer, valid_data, test_data = built.trainer, built.valid_data, built.test_data
    valid = trainer.evaluate(valid_data, load_best_model=True, model_file=checkpoint)
    test = trainer.evaluate(test_data, load_best_model=True, model_file=checkpoint)
    return {"valid": plain(dict(valid or {})), "test": plain(dict(test or {}))}


def evaluate_checkpoint_task(base, params, trial_dir, checkpoint):
    set_torch_threads(base["cpus_per_trial"])
    previous = os.getcwd()
    os.chdir(trial_dir)  # RecBole's log/ folders go to the trial, not the worker's cwd
    try:
        return evaluate_checkpoint(base["model"], base["dataset"], base["config_files"],
                                   trial_config_dict(base, params, trial_dir), checkpoint)
    finally:
        os.chdir(previous)


def trial_dirname(trial):
    return f"trial_{trial.trial_id}"
