"""The runner end to end: our models and RecBole's through run(), the CLI, --results, errors, config order."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import QUICK, REPO_ROOT
from recbole_ssr.cli import parse_args
from recbole_ssr.config.values import parse_value
from recbole_ssr.config.configurator import Config
from recbole_ssr.experiments.run import run

RESULT_KEYS = {"model", "dataset", "best_valid_result", "test_result", "best_epoch", "epochs_run",
               "seconds_per_epoch", "n_params", "config"}


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "VBPR"])
def test_models_train_and_evaluate_through_run(make_mmrec, model):
    root, name, _ = make_mmrec()
    outcome = run(model, name, config_dict=dict(QUICK, data_path=root, epochs=2))
    assert RESULT_KEYS <= set(outcome)
    assert outcome["epochs_run"] == 2 and outcome["best_epoch"] in (0, 1)
    assert set(outcome["test_result"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert all(0.0 <= v <= 1.0 for v in outcome["test_result"].values())
    assert outcome["n_params"] > 0


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run_recbole_ssr.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_end_to_end_writes_results(make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    proc = run_cli("--model=VBPR", f"--dataset={name}", f"--data_path={root}", "--epochs=2", "--state=ERROR",
                   "--train_batch_size=64", "--results=out/r.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "r.json").read_text())
    assert RESULT_KEYS <= set(result)
    assert result["model"] == "VBPR" and result["dataset"] == name and result["epochs_run"] == 2
    assert result["config"]["train_batch_size"] == 64 and result["config"]["eval_protocol"] == "mmrec"
    assert "VBPR on tiny" in proc.stdout and "recall@20=" in proc.stdout


@pytest.mark.parametrize("breakage, needle", [
    ("missing_npy", "feature file for modality 'image' not found"),
    ("no_x_label", "column 'x_label' is missing"),
])
def test_cli_bad_input_exits_nonzero_without_traceback(make_mmrec, tmp_path, breakage, needle):
    root, name, frame = make_mmrec()
    if breakage == "missing_npy":
        os.remove(f"{root}/{name}/image_feat.npy")
        extra = ["--modalities=['image','text']"]
    else:
        frame[["userID", "itemID"]].to_csv(f"{root}/{name}/{name}.inter", sep="\t", index=False)
        extra = []
    proc = run_cli("--model=VBPR", f"--dataset={name}", f"--data_path={root}", *extra, cwd=tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last
    assert "Traceback" not in proc.stderr


def test_cli_unknown_model_and_bad_argument(tmp_path):
    proc = run_cli("--model=Nope", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown model 'Nope'" in proc.stderr and "VBPR" in proc.stderr
    proc = run_cli("--model=VBPR", "stray", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot parse argument 'stray'" in proc.stderr


def test_parse_values_and_config_files(tmp_path):
    assert parse_value("1e-4") == 1e-4 and parse_value("[1, 2]") == [1, 2]
    assert parse_value("true") is True and parse_value("none") is None and parse_value("abc") == "abc"
    args, overrides = parse_args(["--seed=5"])
    assert args.seeds == 1 and overrides == {"seed": 5}  # a config key, never an abbreviation of --seeds
    args, overrides = parse_args(["--model=SSR", "--learning_rate=0.01", "--config_files=a.yaml,b.yaml"])
    assert args.model == "SSR" and overrides == {"learning_rate": 0.01}
    assert args.config_files == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]


def test_config_priority_order(make_mmrec, tmp_path, monkeypatch):
    """RecBole internals < overall.yaml < dataset yaml < model yaml < config files < command line."""
    root, name, _ = make_mmrec()
    props = tmp_path / "props"
    for sub in ("model", "dataset", "protocol"):
        (props / sub).mkdir(parents=True)
    (props / "protocol" / "mmrec.yaml").write_text("stopping_step: 7\nembedding_size: 1\n")
    (props / "overall.yaml").write_text("embedding_size: 2\nreg_weight: 2\nlearning_rate: 2\n"
                                        "dropout: 0.2\nseed: 2\n")
    (props / "dataset" / f"{name}.yaml").write_text("reg_weight: 3\nlearning_rate: 3\ndropout: 0.3\nseed: 3\n")
    (props / "model" / "VBPR.yaml").write_text("learning_rate: 4\ndropout: 0.4\nseed: 4\n")
    (tmp_path / "extra.yaml").write_text("dropout: 0.5\nseed: 5\n")
    monkeypatch.setenv("RECBOLE_SSR_PROPERTIES", str(props))
    config = Config("VBPR", name, [str(tmp_path / "extra.yaml")], {"seed": 6, "data_path": root})
    assert config["train_batch_size"] == 2048  # RecBole internal default
    assert config["stopping_step"] == 7  # protocol
    assert (config["embedding_size"], config["reg_weight"], config["learning_rate"]) == (2, 3, 4)
    assert (config["dropout"], config["seed"]) == (0.5, 6)


def test_shipped_yaml_files_parse():
    for folder, _, files in os.walk(os.path.join(REPO_ROOT, "properties")):
        for file in files:
            if file.endswith(".yaml"):
                with open(os.path.join(folder, file)) as f:
                    assert isinstance(yaml.safe_load(f), dict), file
