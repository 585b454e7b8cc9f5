"""The results of a search: one record per trial (from Ray's analysis), the selection of the best trial (validation
only), ``trials.csv`` and ``best.yaml``."""

import csv
import glob
import json
import math
import os

from recbole_ssr.config.search_space import apply_params, read_yaml
from recbole_ssr.core.report import plain
from recbole_ssr.core.safe_io import atomic_write
from recbole_ssr.experiments.tune.trial import CHECKPOINTS, TRIAL_KEYS
from recbole_ssr.training.stopping import improves

TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
BEST_JSON = "best.json"
STATUSES = ("completed", "stopped", "failed", "unfinished")


def _last_line(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return lines[-1] if lines else ""
    except OSError:
        return ""


def _error_file(trial):
    for folder in (trial.path, trial.local_path):
        if folder and os.path.isfile(os.path.join(folder, "error.txt")):
            return os.path.join(folder, "error.txt")
    return None


def trial_record(trial, searched, trials_dir):
    """One trial as a plain dict (status: completed | stopped | failed | unfinished)."""
    last = trial.last_result or {}
    finished = bool(last.get("finished"))
    if trial.status == "ERROR":
        status = "failed"
    elif trial.status == "TERMINATED":
        status = "completed" if finished else "stopped"
    else:
        status = "unfinished"
    trial_dir = os.path.join(trials_dir, trial.trial_id)
    error, error_file = "", _error_file(trial)
    if status == "failed":
        error = _last_line(error_file) if error_file else "failed (no error file)"
    checkpoints = sorted(glob.glob(os.path.join(trial_dir, CHECKPOINTS, "*.pth")))
    score = last.get("best_valid_score")
    return {
        "trial_id": trial.trial_id,
        "status": status,
        "params": plain({k: trial.config.get(k) for k in searched}),
        "valid_score": float(score) if score is not None and status != "failed" else None,
        "valid": plain(last.get("best_valid") or {}),
        "test": plain(last.get("test") or {}) if finished else {},
        "test_source": "trial" if finished else None,
        "best_epoch": last.get("best_epoch"),
        "epochs": last.get("epoch"),
        "seconds_per_epoch": last.get("seconds_per_epoch"),
        "seconds": round(float(last["time_total_s"]), 2) if last.get("time_total_s") is not None else None,
        "error": error,
        "error_file": error_file,
        "trial_dir": trial_dir,
        # the driver's view, else what the trial saw on its own node (no shared filesystem assumed)
        "checkpoint": checkpoints[-1] if checkpoints else last.get("checkpoint"),
        "node_id": last.get("node_id"),
    }


def select_best(records, bigger=True):
    """The trial with the best validation score (completed or stopped early; ties: the earlier trial)."""
    best = None
    for record in records:
        score = record["valid_score"]
        if record["status"] not in ("completed", "stopped") or score is None or math.isnan(score):
            continue
        if improves(score, None if best is None else best["valid_score"], bigger=bigger, strict=True):
            best = record
    return best


def write_trials_csv(path, records, searched):
    metrics = []
    for record in records:
        for part in ("valid", "test"):
            for name in record[part]:
                if name not in metrics:
                    metrics.append(name)
    columns = (["trial_id", "status"] + [f"config/{k}" for k in searched]
               + [f"valid/{m}" for m in metrics] + [f"test/{m}" for m in metrics]
               + ["best_epoch", "epochs", "seconds", "seconds_per_epoch", "error", "trial_dir"])
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in records:
            row = [r["trial_id"], r["status"]]
            row += [json.dumps(r["params"].get(k)) if isinstance(r["params"].get(k), (list, dict))
                    else r["params"].get(k) for k in searched]
            row += [r["valid"].get(m, "") for m in metrics] + [r["test"].get(m, "") for m in metrics]
            row += [r["best_epoch"], r["epochs"], r["seconds"], r["seconds_per_epoch"], r["error"], r["trial_dir"]]
            writer.writerow(["" if v is None else v for v in row])


def best_config(manifest, params):
    """The configuration a ``--config_files`` run needs to repeat the best trial: the search's config files,
    the search file's fixed keys and command-line overrides (absolute data path), then the sampled values."""
    merged = {}
    for path in manifest["config_files"] or []:
        merged.update(read_yaml(path, "config file"))
    merged.update(manifest["base_config_dict"])
    merged = apply_params(merged, params)
    for key in TRIAL_KEYS:
        merged.pop(key, None)
    return plain(merged)


def write_best_yaml(path, manifest, best, metric):
    import yaml

    header = [
        f"# Best trial of the search in {os.path.dirname(path)}",
        f"# model {manifest['model']}, dataset {manifest['dataset']}, trial {best['trial_id']} ({best['status']}), "
        f"selected by valid {metric} = {best['valid_score']:.6g}",
        f"# valid: {json.dumps(best['valid'])}",
        f"# test:  {json.dumps(best['test'])}",
        f"# repeat it: python run_recbole_ssr.py --model={manifest['model']} --dataset={manifest['dataset']} "
        f"--config_files={path}",
    ]
    body = yaml.safe_dump(best_config(manifest, best["params"]), sort_keys=False, default_flow_style=False)
    with atomic_write(path) as f:
        f.write("\n".join(header) + "\n" + body)
