"""Benchmark tables with significance (recbole_ssr/experiments/tables.py): the per-user sidecar a batch writes, the
significance columns of the JSON/CSV, the markers and legend of the markdown, the ``.tex`` table, and the merge
(``python -m recbole_ssr.benchmark``) testing runs made separately the same way. On the embedded ml-100k (943
users), where Pop clearly beats BPR trained for one epoch."""

import csv
import functools
import gzip
import json
import os

import numpy as np
import pytest

from conftest import QUICK
from recbole_ssr.benchmark import main as benchmark_main
from recbole_ssr.core.spec import ExperimentSpec
from recbole_ssr.data.default import build_default_dataset
from recbole_ssr.experiments import runner, side_by_side, significance, tables
from recbole_ssr.experiments.run import run
from recbole_ssr.training import per_user

SETTINGS = dict(QUICK, train_batch_size=4096)
P_COLUMNS = ("recall@20_user_p", "recall@20_user_p_holm", "recall@20_user_diff", "recall@20_user_rel",
             "ndcg@20_user_p", "ndcg@20_seed_p", "vs_best")


@pytest.fixture
def ml100k(tmp_path, monkeypatch):
    """The embedded dataset in the test's folder (a stand-in text encoder) and side-by-side runs in this process."""
    encoder = lambda texts: np.stack([[len(t), t.count(" ")] for t in texts]).astype(np.float32)  # noqa: E731
    build_default_dataset(str(tmp_path / "dataset" / "ml-100k"), text_encoder=encoder)
    monkeypatch.setattr(side_by_side, "run_many", functools.partial(runner.run_many, isolated=False))
    return "ml-100k"


def sidecar(path):
    with gzip.open(path, "rb") as handle:
        return json.loads(handle.read())["runs"]


def rows_of(tex):
    """``{model cell: [value cells]}`` of a .tex table's body."""
    lines = tex.splitlines()
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    return {line.split(" & ")[0]: line[:-len(r" \\")].split(" & ")[1:] for line in body}


def test_a_batch_keeps_per_user_metrics_and_tests_every_table_the_same_way(ml100k, tmp_path, capsys):
    # --- one side-by-side batch: Pop and BPR, 2 seeds
    results = str(tmp_path / "bench.json")
    rows, runs = side_by_side.run_side_by_side(["Pop", "BPR"], ml100k, ExperimentSpec(seeds=2, results=results),
                                               dict(SETTINGS, seed=3))
    out = capsys.readouterr().out
    assert all(r["status"] == "ok" and "per_user" not in r for r in runs)
    records = sidecar(tmp_path / "bench.users.json.gz")
    assert sorted((r["model"], r["seed"], r["run_id"]) for r in records) == sorted(
        (r["model"], r["seed"], r["run_id"]) for r in runs)
    for record in records:  # the per-user means are the run's test metrics
        run_record = next(r for r in runs if r["run_id"] == record["run_id"])
        assert np.mean(record["metrics"]["recall@20"]) == pytest.approx(run_record["test_result"]["recall@20"],
                                                                        abs=1e-4)
        assert len(record["users"]) == 943
    log = [json.loads(line) for line in open(tmp_path / "bench.runs.jsonl")]
    assert len(log) == 4 and not any("per_user" in r for r in log)  # per-user data only in the sidecar
    saved = json.loads(open(results).read())
    assert not any("per_user" in r for r in saved["runs"])
    pop, bpr = saved["summary"]
    assert saved["significance"]["best"] == "Pop" and pop["vs_best"] == "best"
    assert bpr["vs_best"] == "different" and bpr["recall@20_user_p_holm"] < 0.05 and bpr["ndcg@20_user_p"] < 0.05
    assert bpr["recall@20_user_diff"] < 0 and bpr["recall@20_user_n"] == 943
    assert bpr["recall@20_user_rel"] == pytest.approx(bpr["recall@20_user_diff"] / pop["recall@20_mean"], rel=1e-3)
    assert "t-test: 2 seed(s)" in bpr["significance_note"] and bpr["recall@20_seed_p"] is None
    with open(tmp_path / "bench.csv") as f:
        table_rows = list(csv.DictReader(f))
    assert all(column in table_rows[1] for column in P_COLUMNS)
    assert float(table_rows[1]["recall@20_user_p"]) == bpr["recall@20_user_p"]
    # markdown: no marker (BPR differs, Pop is the best), the legend below
    assert "| Pop | " in out and "| BPR | " in out and "†: not significantly different from Pop" in out
    assert saved["table"].endswith(significance.legend(saved["significance"]))
    # the paper's table: Pop bold in every column, BPR underlined, 2 seeds in the caption, no marker
    tex = open(tmp_path / "bench.tex").read()
    assert tex.splitlines()[0] == tables.TEX_HEADER and r"\toprule" in tex and "over 2 seeds" in tex
    body = rows_of(tex)
    assert list(body) == ["Pop", "BPR"]
    assert all(cell.startswith(r"\textbf{") for cell in body["Pop"]) and len(body["Pop"]) == 4
    assert all(cell.startswith(r"\underline{") for cell in body["BPR"])

    # --- the same command again: every run reused, with its per-user metrics
    side_by_side.run_side_by_side(["Pop", "BPR"], ml100k, ExperimentSpec(seeds=2, results=results),
                                  dict(SETTINGS, seed=3))
    assert "4 of 4 run(s) reused" in capsys.readouterr().out
    assert json.loads(open(results).read())["significance"] == saved["significance"]

    # --- the same runs made separately: Pop as single --results runs, BPR as its own batch; merged, tested alike
    for seed in (3, 4):
        run("Pop", ml100k, config_dict=dict(SETTINGS, seed=seed), results=str(tmp_path / f"pop_{seed}.json"))
        assert len(sidecar(tmp_path / f"pop_{seed}.users.json.gz")) == 1
        assert "per_user" not in json.loads(open(tmp_path / f"pop_{seed}.json").read())
    side_by_side.run_side_by_side(["BPR"], ml100k, ExperimentSpec(seeds=2, results=str(tmp_path / "bpr.json")),
                                  dict(SETTINGS, seed=3))
    merged = str(tmp_path / "merged.json")
    inputs = [str(tmp_path / name) for name in ("pop_3.json", "pop_4.json", "bpr.json")]
    assert benchmark_main(inputs + [f"--results={merged}"]) == 0
    again = json.loads(open(merged).read())
    assert again["significance"] == saved["significance"]  # the same per-user values, the same tests
    assert [r["vs_best"] for r in again["summary"]] == ["best", "different"]
    assert rows_of(open(tmp_path / "merged.tex").read()) == body
    assert len(sidecar(tmp_path / "merged.users.json.gz")) == 4  # the merge's own sidecar: merges of merges


def test_an_identical_model_is_marked_tied_and_a_run_without_per_user_data_untested(ml100k, tmp_path, capsys):
    """The best model's runs filed again under another name (identical per-user values: p = 1, the marker †:
    not significantly different from the best), and a run made without per-user metrics (?), through the merge."""
    results = str(tmp_path / "bench.json")
    side_by_side.run_side_by_side(["Pop", "BPR"], ml100k, ExperimentSpec(results=results), SETTINGS)
    saved = json.loads(open(results).read())
    twin = [dict(r, model="Pop twin") for r in saved["runs"] if r["model"] == "Pop"]
    with open(tmp_path / "twin.json", "w") as f:
        json.dump({"runs": twin}, f)
    per_user.write_sidecar(str(tmp_path / "twin.users.json.gz"), [
        dict(r, model="Pop twin") for r in sidecar(tmp_path / "bench.users.json.gz") if r["model"] == "Pop"])
    old = {k: v for k, v in saved["runs"][1].items() if k != "run_id"}
    with open(tmp_path / "old.json", "w") as f:  # a run made before per-user metrics were kept: no sidecar
        json.dump(dict(old, model="Old"), f)
    capsys.readouterr()
    merged = str(tmp_path / "merged.json")
    assert benchmark_main([results, str(tmp_path / "twin.json"), str(tmp_path / "old.json"),
                           f"--results={merged}"]) == 0
    out = capsys.readouterr().out
    result = json.loads(open(merged).read())
    summary = {row["model"]: row for row in result["summary"]}
    assert result["significance"]["best"] == "Pop"  # equal validation: the model listed first
    tied = summary["Pop twin"]
    assert tied["vs_best"] == "tied" and tied["recall@20_user_p"] == 1.0 and tied["ndcg@20_user_p_holm"] == 1.0
    assert tied["recall@20_user_diff"] == 0.0
    assert summary["BPR"]["vs_best"] == "different" and summary["BPR"]["recall@20_user_p_holm"] < 0.05
    assert summary["Old"]["vs_best"] == "not tested" and "no per-user metrics" in summary["Old"]["significance_note"]
    assert "per-user test metrics for 3 of 4 successful run(s); not tested: Old seed 999" in out
    assert "| Pop twin† | " in out and "| BPR | " in out and "| Old? | " in out and "?: not tested" in out
    body = rows_of(open(tmp_path / "merged.tex").read())
    assert list(body) == ["Pop", "BPR", r"Pop twin$^{\dagger}$", r"Old$^{?}$"]
    assert body["Pop"] == body[r"Pop twin$^{\dagger}$"] and body["Pop"][0].startswith(r"\textbf{")  # tied ranks
    assert body["BPR"][0].startswith(r"\underline{") and body[r"Old$^{?}$"] == body["BPR"]


def test_files_that_are_not_ours_beside_the_results_are_not_replaced(ml100k, tmp_path, capsys):
    results = str(tmp_path / "bench.json")
    side_by_side.run_side_by_side(["Pop"], ml100k, ExperimentSpec(results=results), SETTINGS)
    (tmp_path / "out.tex").write_text("\\documentclass{article}\n")
    capsys.readouterr()
    assert benchmark_main([results, "--results", str(tmp_path / "out.json")]) == 2
    assert "out.tex already exists and is not a table recbole-ssr wrote" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out.json") and (tmp_path / "out.tex").read_text().startswith("\\doc")
    (tmp_path / "out.tex").unlink()
    (tmp_path / "out.users.json.gz").write_bytes(b"mine")
    assert benchmark_main([results, "--results", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "out.users.json.gz: cannot read the per-user metrics" in err
    assert not os.path.exists(tmp_path / "out.json") and (tmp_path / "out.users.json.gz").read_bytes() == b"mine"
    (tmp_path / "out.tex").write_text("\\documentclass{article}\n")
    assert benchmark_main([results, "--results", str(tmp_path / "out.json"), "--overwrite"]) == 0
    assert open(tmp_path / "out.tex").read().startswith(tables.TEX_HEADER)
    assert [r["model"] for r in sidecar(tmp_path / "out.users.json.gz")] == ["Pop"]
    (tmp_path / "bench.users.json.gz").write_bytes(b"torn")  # a damaged sidecar beside an input: one error line
    assert benchmark_main([results, "--results", str(tmp_path / "again.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bench.users.json.gz: cannot read the per-user metrics" in err
    assert not os.path.exists(tmp_path / "again.json")
