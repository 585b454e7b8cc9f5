"""Hyper-parameter search (--tune): search-space parsing (no Ray), selection/CSV/best-yaml helpers, the
stopped-trial test evaluation, and two real Ray Tune searches on the tiny dataset (one Ray for the module)."""

import csv
import glob
import json
import os

import pytest
import yaml

from conftest import QUICK, REPO_ROOT, ctrl_c_when
from recbole_ssr.cli import main, parse_args
from recbole_ssr.config.search_space import (DISTRIBUTIONS, apply_params, default_settings, load_search_space,
                                             parse_search_space)
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.experiments.tune.driver import new_search_folder, resolve_settings, run_search
from recbole_ssr.experiments.tune.results import select_best
from recbole_ssr.experiments.tune.trial import evaluate_checkpoint
from recbole_ssr.training.stopping import BestTracker

SEARCH_DIR = os.path.join(REPO_ROOT, "properties", "search")


# ---------------------------------------------------------------------------------------------------- parsing

def test_every_distribution_parses_and_samples_in_range():
    space = parse_search_space({
        "learning_rate": {"loguniform": [1e-4, 1e-2]},
        "dropout": {"uniform": [0.1, 0.5]},
        "reg_weight": {"choice": [0, 1e-5, 1e-4]},
        "n_layers": {"grid": [1, 2, 3]},
        "knn_k": {"randint": [5, 7]},
        "mask_rate": {"quniform": [0.1, 0.4, 0.1]},
        "hyper_num": {"quniform": [4, 16, 4]},
        "knn_map.image": {"grid": [10, 20]},
        "embedding_size": 64,
        "eval_args": {"mode": "full"},
        "lr_decay": {"fixed": {"steps": [1, 2]}},
        "search": {"num_samples": 3, "scheduler": "fifo"},
    }, source="t.yaml")
    kinds = {k: p.kind for k, p in space.params.items()}
    assert kinds == {"learning_rate": "loguniform", "dropout": "uniform", "reg_weight": "choice", "n_layers": "grid",
                     "knn_k": "randint", "mask_rate": "quniform", "hyper_num": "quniform", "knn_map.image": "grid"}
    assert space.fixed == {"embedding_size": 64, "eval_args": {"mode": "full"}, "lr_decay": {"steps": [1, 2]}}
    assert space.settings == {"num_samples": 3, "scheduler": "fifo"}
    assert space.grid_points == 6 and space.n_trials(3) == 18
    # exact multiples of q (no 0.30000000000000004), integers for integer arguments
    assert space.params["mask_rate"].quantized_values() == [0.1, 0.2, 0.3, 0.4]
    assert space.params["hyper_num"].quantized_values() == [4, 8, 12, 16]

    ray_space = space.to_ray()
    assert ray_space["n_layers"] == {"grid_search": [1, 2, 3]}
    for key, param in space.params.items():
        if param.kind == "grid":
            continue
        samples = ray_space[key].sample(size=300)
        assert all(param.contains(v) for v in samples), key
    assert set(ray_space["knn_k"].sample(size=300)) == {5, 6, 7}  # randint: both ends included
    assert set(ray_space["mask_rate"].sample(size=300)) == {0.1, 0.2, 0.3, 0.4}


@pytest.mark.parametrize("spec, needle", [
    ({"lr": {"lognormal": [0, 1]}}, "unknown distribution 'lognormal'"),
    ({"lr": {"loguniform": [0, 1]}}, "loguniform expects"),
    ({"lr": {"uniform": [0.5, 0.1]}}, "low < high"),
    ({"lr": {"uniform": [0.1]}}, "uniform expects"),
    ({"k": {"randint": [1.5, 4]}}, "randint expects"),
    ({"q": {"quniform": [0.1, 0.4, 0]}}, "quniform expects"),
    ({"q": {"quniform": [0.11, 0.19, 0.1]}}, "at least one multiple"),
    ({"c": {"choice": []}}, "choice expects"),
    ({"c": {"grid": 3}}, "grid expects"),
    ({"search": {"num_trials": 4}}, "unknown search setting 'search.num_trials'"),
    ({"search": {"scheduler": "hyperband"}}, "scheduler"),
])
def test_bad_search_spaces_raise_clear_errors(spec, needle):
    with pytest.raises(ConfigError) as info:
        parse_search_space(spec, source="bad.yaml")
    message = str(info.value)
    assert needle in message and "bad.yaml" in message
    if "unknown distribution" in needle:
        assert all(name in message for name in DISTRIBUTIONS)


def test_yaml_file_floats_and_missing_file(tmp_path):
    (tmp_path / "s.yaml").write_text("learning_rate: {loguniform: [1e-4, 1e-2]}\nreg_weight: 1e-5\n")
    space = load_search_space(str(tmp_path / "s.yaml"))
    assert space.params["learning_rate"].args == [1e-4, 1e-2] and space.fixed == {"reg_weight": 1e-5}
    with pytest.raises(ConfigError, match="does not exist"):
        load_search_space(str(tmp_path / "nope.yaml"))


def test_dotted_keys_set_one_entry_of_a_mapping():
    merged = apply_params({"knn_k": {"image": 40, "text": 15, "default": 10}, "lr": 1},
                          {"knn_k.image": 10, "lr": 2})
    assert merged == {"knn_k": {"image": 10, "text": 15, "default": 10}, "lr": 2}
    with pytest.raises(ConfigError, match="not a mapping"):
        apply_params({"knn_k": 10}, {"knn_k.image": 10})


def test_shipped_search_files_parse_and_name_real_config_keys():
    from recbole_ssr.config.configurator import Config
    from recbole_ssr.model.registry import get_model

    files = sorted(f for f in glob.glob(os.path.join(SEARCH_DIR, "*.yaml")) if not f.endswith("defaults.yaml"))
    models = {os.path.basename(f)[:-5] for f in files}
    assert {"SSR", "VBPR", "LATTICE", "FREEDOM", "BM3", "MGCN", "LGMRec", "SMORE", "BPR", "LightGCN"} <= models
    checked = 0
    for path in files:
        space = load_search_space(path)
        model = os.path.basename(path)[:-5]
        try:
            get_model(model)
        except ConfigError:
            continue  # model not shipped yet: its search file is only parsed
        config = Config(model, "no-such-dataset", config_dict={"eval_protocol": "mmrec"})
        for key in list(space.params) + list(space.fixed):
            root = key.split(".", 1)[0]
            assert root in config.final_config_dict, f"{path}: '{key}' is not a configuration key of {model}"
        checked += 1
    assert checked >= 3  # at least VBPR, BPR, LightGCN


def test_settings_priority_defaults_file_command_line(tmp_path):
    defaults = default_settings()
    assert defaults["scheduler"] == "asha" and defaults["num_samples"] == 1
    space = parse_search_space({"lr": {"choice": [1, 2]}, "search": {"num_samples": 5, "grace_period": 3}})
    args, _ = parse_args(["--tune=x.yaml", "--scheduler=fifo", "--gpus_per_trial=0.5", "--output=out"])
    settings = resolve_settings(space, args)
    assert settings["num_samples"] == 5 and settings["grace_period"] == 3  # the file over defaults.yaml
    assert settings["scheduler"] == "fifo" and settings["gpus_per_trial"] == 0.5  # the command line over both
    assert settings["output"] == str(tmp_path / "out")
    args, _ = parse_args(["--tune=x.yaml", "--num_samples=16"])
    assert resolve_settings(space, args)["num_samples"] == 16


def test_search_folders_are_never_reused(tmp_path):
    first = new_search_folder(str(tmp_path), "BPR", "tiny")
    second = new_search_folder(str(tmp_path), "BPR", "tiny")
    assert first != second and os.path.isdir(first) and os.path.isdir(second)


def test_selection_uses_valid_only_with_ties_to_the_earlier_trial():
    def record(tid, status, score, test=None):
        return {"trial_id": tid, "status": status, "valid_score": score, "test": test or {}}

    records = [record("a", "failed", None), record("b", "completed", 0.3, {"recall@20": 0.1}),
               record("c", "stopped", 0.5), record("d", "completed", 0.5, {"recall@20": 0.9}),
               record("e", "unfinished", 0.9)]
    assert select_best(records)["trial_id"] == "c"  # best valid; the test score plays no part
    assert select_best(records, bigger=False)["trial_id"] == "b"
    assert select_best([record("a", "failed", None)]) is None
    tracker = BestTracker(bigger=True, strict=True)
    assert tracker.update(0, 0.2, {"m": 0.2}) and not tracker.update(1, 0.2, {"m": 0.2}) and tracker.epoch == 0
    tracker = BestTracker(bigger=True, strict=False)
    tracker.update(0, 0.2, {}), tracker.update(1, 0.2, {})
    assert tracker.epoch == 1


def test_search_argument_errors(make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    (tmp_path / "s.yaml").write_text("learning_rate: {grid: [0.01, 0.001]}\n")
    args, overrides = parse_args([f"--tune={tmp_path / 's.yaml'}", "--learning_rate=0.1", f"--data_path={root}"])
    with pytest.raises(ConfigError, match="also set on the command line"):
        run_search(["BPR"], name, args, overrides)
    args, overrides = parse_args([f"--tune={tmp_path / 's.yaml'}", "--resume", f"--output={tmp_path / 'none'}"])
    with pytest.raises(ConfigError, match="no unfinished search of BPR"):
        run_search(["BPR"], name, args, overrides)


def test_checkpoint_evaluation_repeats_the_runs_own_test_result(make_mmrec, tmp_path):
    """The policy for trials stopped early by ASHA: their best-valid checkpoint is evaluated after the search."""
    from recbole_ssr.experiments.run import run

    root, name, _ = make_mmrec()
    config = dict(QUICK, data_path=root, epochs=3, checkpoint_dir=str(tmp_path / "ckpt"))
    outcome = run("BPR", name, config_dict=config)
    (checkpoint,) = glob.glob(str(tmp_path / "ckpt" / "*.pth"))
    evaluated = evaluate_checkpoint("BPR", name, None, config, checkpoint)
    assert evaluated["test"] == pytest.approx(outcome["test_result"])
    assert evaluated["valid"] == pytest.approx(outcome["best_valid_result"])


# ---------------------------------------------------------------------------------------------------- Ray



def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_search_selects_by_valid_records_failures_and_best_yaml_reproduces(local_ray, make_mmrec, tmp_path):
    from recbole_ssr.experiments.run import run

    root, name, _ = make_mmrec()
    # learning_rate 1e30 makes the loss NaN: that trial must fail alone (a value out of range, e.g. -1, is refused
    # before the search starts: tests/test_reliability.py)
    (tmp_path / "space.yaml").write_text(
        "learning_rate: {grid: [0.01, 1.0e+30, 0.001]}\n"
        "embedding_size: {choice: [8, 16]}\n"
        "search: {grace_period: 1}\n")
    code = main(["--model=BPR", f"--dataset={name}", f"--data_path={root}", "--tune=space.yaml", "--epochs=2",
                 "--num_samples=1", "--cpus_per_trial=1", "--state=ERROR", "--train_batch_size=64",
                 "--results=out/r.json"])
    assert code == 0
    summary = json.loads((tmp_path / "out" / "r.json").read_text())
    folder = summary["output_dir"]
    assert folder.startswith(str(tmp_path / "tune_results" / f"BPR-{name}-"))
    rows = read_rows(summary["trials_csv"])
    assert len(rows) == 3 and summary["n_trials"] == 3
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and float(failed[0]["config/learning_rate"]) == 1e30
    assert "BPR: the training loss became NaN" in failed[0]["error"], failed[0]["error"]
    assert all(r["status"] in ("completed", "stopped") for r in rows if r is not failed[0])

    ranked = [r for r in rows if r["status"] != "failed"]
    best_row = max(ranked, key=lambda r: float(r["valid/recall@20"]))  # first of equals, as the search does
    best = summary["best"]
    assert best["trial_id"] == best_row["trial_id"]
    assert summary["metric"] == "recall@20" and best["valid"]["recall@20"] == float(best_row["valid/recall@20"])
    assert set(best["test"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert summary["best_config"] == os.path.join(folder, "best.yaml")

    # the best yaml, given to --config_files, repeats the trial: same configuration, same valid result
    best_yaml = yaml.safe_load(open(summary["best_config"]))
    assert best_yaml["learning_rate"] == best["params"]["learning_rate"]
    assert best_yaml["embedding_size"] == best["params"]["embedding_size"]
    trial = json.load(open(os.path.join(best["trial_dir"], "outcome.json")))
    again = run("BPR", name, config_file_list=[summary["best_config"]])
    ignore = {"checkpoint_dir", "gpu_id", "show_progress"}
    differing = {k for k in set(trial["config"]) | set(again["config"])
                 if k not in ignore and trial["config"].get(k) != again["config"].get(k)}
    assert not differing, {k: (trial["config"].get(k), again["config"].get(k)) for k in differing}
    assert again["best_valid_result"] == pytest.approx(best["valid"])
    assert again["test_result"] == pytest.approx(best["test"])

    # only the best trial keeps its checkpoint; each trial had its own folder
    assert glob.glob(os.path.join(best["trial_dir"], "checkpoints", "*.pth"))
    others = [r for r in rows if r["trial_id"] != best["trial_id"]]
    assert not any(glob.glob(os.path.join(r["trial_dir"], "checkpoints", "*.pth")) for r in others)
    assert json.load(open(os.path.join(folder, "search.json")))["status"] == "done"


def test_interrupted_search_resumes_without_redoing_finished_trials(local_ray, make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    (tmp_path / "space.yaml").write_text("embedding_size: {grid: [8, 16, 32]}\n")
    argv = ["--model=BPR", f"--dataset={name}", f"--data_path={root}", "--tune=space.yaml", "--epochs=1",
            "--scheduler=fifo", "--cpus_per_trial=2", "--state=ERROR", "--train_batch_size=64"]
    args, overrides = parse_args(argv)

    # What Ctrl-C does, when the second trial has started: the trials run one at a time (2 CPUs each), so the
    # first has finished and the third has not begun.
    with ctrl_c_when(lambda: len(glob.glob(str(tmp_path / "tune_results" / "*" / "trials" / "*"))) >= 2):
        run_search(["BPR"], name, args, overrides)
    (folder,) = glob.glob(str(tmp_path / "tune_results" / "*"))
    assert json.load(open(os.path.join(folder, "search.json")))["status"] == "interrupted"
    rows = read_rows(os.path.join(folder, "trials.csv"))
    finished = {r["trial_id"] for r in rows if r["status"] == "completed"}
    assert finished and any(r["status"] == "unfinished" for r in rows)
    stamps = {t: os.path.getmtime(os.path.join(folder, "trials", t, "outcome.json")) for t in finished}

    args, overrides = parse_args(argv + ["--resume"])
    summary = run_search(["BPR"], name, args, overrides)
    assert summary["output_dir"] == folder and summary["n_trials"] == 3 and summary["n_completed"] == 3
    assert {t: os.path.getmtime(os.path.join(folder, "trials", t, "outcome.json")) for t in finished} == stamps
    rows = read_rows(summary["trials_csv"])
    assert sorted(int(r["config/embedding_size"]) for r in rows) == [8, 16, 32]
