"""Side-by-side mode: every model x seed, aggregation, failures reported without stopping the others."""

import csv
import json

import pytest

from conftest import QUICK
from recbole_ssr.experiments.side_by_side import main as merge_main, run_side_by_side
from recbole_ssr.core.report import mean_std
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.core.spec import ExperimentSpec
from recbole_ssr.training.per_user import read_sidecar


def test_side_by_side_aggregates_seeds_and_reports_failures(make_mmrec, tmp_path, capsys):
    root, name, _ = make_mmrec(modalities={})
    overrides = dict(QUICK, data_path=root, epochs=2, seed=5)  # no feature files: VBPR fails when its model is built
    rows, runs = run_side_by_side(["BPR", "VBPR"], name, ExperimentSpec(seeds=2, results=str(tmp_path / "bench.json")),
                                  overrides)
    assert [(r["model"], r["seed"], r["status"]) for r in runs] == [
        ("BPR", 5, "ok"), ("BPR", 6, "ok"), ("VBPR", 5, "failed"), ("VBPR", 6, "failed")]
    bpr, vbpr = rows
    for metric in ("recall@20", "ndcg@10"):
        values = [r["test_result"][metric] for r in runs[:2]]
        mean = sum(values) / 2
        std = abs(values[0] - values[1]) / 2 ** 0.5  # sample std of two values
        assert bpr[f"{metric}_mean"] == pytest.approx(mean) and bpr[f"{metric}_std"] == pytest.approx(std)
    assert runs[0]["seed"] != runs[1]["seed"] and runs[0]["config"]["seed"] == 5
    assert vbpr["runs_ok"] == 0 and "needs at least 1 content modality" in vbpr["error"]
    out = capsys.readouterr().out
    assert "| BPR | " in out and "| VBPR | failed: " in out
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert len(saved["runs"]) == 4 and saved["summary"][0]["model"] == "BPR"
    with open(tmp_path / "bench.csv") as f:
        assert [row["model"] for row in csv.DictReader(f)] == ["BPR", "VBPR"]
    progress = [json.loads(line) for line in open(tmp_path / "bench.runs.jsonl")]  # written run by run
    # each successful run's per-user test metrics came back from its process into the sidecar, not the JSON
    records = read_sidecar(str(tmp_path / "bench.users.json.gz"))
    assert [(r["model"], r["seed"], r["run_id"]) for r in records] == [(r["model"], r["seed"], r["run_id"])
                                                                       for r in runs[:2]]
    assert not any("per_user" in r for r in saved["runs"] + progress)
    assert [(r["model"], r["seed"], r["status"]) for r in progress] == [(r["model"], r["seed"], r["status"]) for r in runs]

    # the same BPR seeds made as separate runs (one --results file each, as quick_start writes them) merge into the
    # same summary
    files = []
    for run in runs[:2]:
        single = {k: v for k, v in run.items() if k not in ("status", "seed", "wall_seconds")}
        files.append(tmp_path / f"bpr_{run['seed']}.json")
        files[-1].write_text(json.dumps(single))
    assert merge_main([str(f) for f in files] + ["--results", str(tmp_path / "merged.json")]) == 0
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["seeds"] == [5, 6] and merged["models"] == ["BPR"]
    for metric in ("recall@20", "ndcg@10"):
        assert merged["summary"][0][f"{metric}_mean"] == pytest.approx(bpr[f"{metric}_mean"])
        assert merged["summary"][0][f"{metric}_std"] == pytest.approx(bpr[f"{metric}_std"])


def test_merge_rejects_a_file_that_is_not_results(tmp_path, capsys):
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"hello": 1}))
    assert merge_main([str(bad)]) == 2
    assert "notes.json: not a results file" in capsys.readouterr().err


def test_unknown_model_fails_before_any_run():
    with pytest.raises(ConfigError, match="unknown model 'Nope'"):
        run_side_by_side(["BPR", "Nope"], "tiny", ExperimentSpec(), {})


def test_mean_std():
    assert mean_std([1.0]) == (1.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
