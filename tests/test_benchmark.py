"""Side-by-side mode: every model x seed, aggregation, failures reported without stopping the others."""

import csv
import json

import pytest

from conftest import QUICK
from recbole_ssr.benchmark import mean_std, run_side_by_side
from recbole_ssr.errors import ConfigError


def test_side_by_side_aggregates_seeds_and_reports_failures(make_mmrec, tmp_path, capsys):
    root, name, _ = make_mmrec()
    overrides = dict(QUICK, data_path=root, epochs=2, use_modalities=[], seed=5)  # VBPR needs a modality: fails
    rows, runs = run_side_by_side(["BPR", "VBPR"], name, 2, None, overrides, str(tmp_path / "bench.json"))
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


def test_unknown_model_fails_before_any_run():
    with pytest.raises(ConfigError, match="unknown model 'Nope'"):
        run_side_by_side(["BPR", "Nope"], "tiny", 1)


def test_mean_std():
    assert mean_std([1.0]) == (1.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
