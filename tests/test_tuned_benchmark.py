"""The tuned benchmark (--tune=auto x --seeds x several models), the exact trial budget and the Optuna searcher."""

import glob
import json
import os

import pytest
import yaml

from conftest import ctrl_c_when
from recbole_ssr.cli import main, parse_args
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.config.search_space import parse_search_space
from recbole_ssr.experiments.tune.driver import planned_trials, run_search
from recbole_ssr.training.per_user import read_sidecar

TINY = ["--epochs=1", "--state=ERROR", "--train_batch_size=64"]


# ------------------------------------------------------------------------------------------------- no Ray

def test_exact_budget_draws_distinct_points_of_the_space():
    space = parse_search_space({"a": {"grid": [1, 2, 3]}, "b": {"choice": ["x", "y"]},
                                "c": {"quniform": [0.1, 0.3, 0.1]}, "d": {"randint": [5, 6]}})
    flat = space.without_grid()
    assert [p.kind for p in flat.params.values()] == ["choice", "choice", "quniform", "randint"]
    assert flat.finite_size() == 3 * 2 * 3 * 2
    points = flat.distinct_points(10, seed=7)
    assert len(points) == 10
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 10
    assert all(space.params[k].contains(v) for p in points for k, v in p.items())
    assert points == flat.distinct_points(10, seed=7) and points != flat.distinct_points(10, seed=8)
    everything = flat.distinct_points(1000)
    assert len(everything) == 36 and len({json.dumps(p, sort_keys=True) for p in everything}) == 36
    settings = {"budget": "exact", "num_samples": 50, "search_alg": "random"}
    assert planned_trials(flat, settings) == 36  # a space smaller than the budget: every point once
    assert planned_trials(flat, dict(settings, num_samples=5)) == 5
    assert planned_trials(space, {"budget": "per_grid_point", "num_samples": 2}) == 6  # Ray Tune's rule
    continuous = parse_search_space({"lr": {"loguniform": [1e-4, 1e-2]}})
    assert continuous.finite_size() is None
    assert planned_trials(continuous, dict(settings, num_samples=4)) == 4


def test_optuna_cannot_enumerate_a_grid_axis(make_mmrec, tmp_path):
    space = parse_search_space({"a": {"grid": [1, 2]}}, source="s.yaml")
    with pytest.raises(ConfigError, match="Write 'choice' instead of 'grid'"):
        space.check_searcher("optuna")
    space.without_grid().check_searcher("optuna")  # the exact budget turns grid axes into choice axes
    root, name, _ = make_mmrec()
    (tmp_path / "s.yaml").write_text("embedding_size: {grid: [8, 16]}\n")
    args, overrides = parse_args(["--tune=s.yaml", "--search_alg=optuna", f"--data_path={root}"] + TINY)
    with pytest.raises(ConfigError, match="optuna"):
        run_search(["BPR"], name, args, overrides)


def test_tune_auto_errors_before_anything_runs(make_mmrec, tmp_path, capsys):
    root, name, _ = make_mmrec()
    assert main(["--model=BPR,NoSuchModel", f"--dataset={name}", f"--data_path={root}", "--tune=auto"] + TINY) == 2
    assert "no search space for NoSuchModel" in capsys.readouterr().err
    (tmp_path / "s.yaml").write_text("embedding_size: {choice: [8, 16]}\n")
    assert main(["--model=BPR,LightGCN", f"--dataset={name}", f"--data_path={root}", "--tune=s.yaml"] + TINY) == 2
    assert "with several models use --tune=auto" in capsys.readouterr().err
    assert main(["--model=BPR,LightGCN", f"--dataset={name}", f"--data_path={root}", "--tune=auto",
                 "--learning_rate=0.01"] + TINY) == 2
    assert "also set on the command line" in capsys.readouterr().err
    assert not glob.glob(str(tmp_path / "tune_results" / "*"))


# ------------------------------------------------------------------------------------------------- Ray



def test_optuna_search_respects_the_bounds_and_resumes(local_ray, make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    (tmp_path / "space.yaml").write_text(
        "learning_rate: {loguniform: [0.002, 0.05]}\n"
        "embedding_size: {choice: [8, 16]}\n"
        "reg_weight: {quniform: [0.0, 0.2, 0.1]}\n"
        "search: {search_alg: optuna, num_samples: 3, scheduler: fifo}\n")
    argv = [f"--data_path={root}", "--tune=space.yaml", "--cpus_per_trial=2"] + TINY  # one trial at a time
    args, overrides = parse_args(argv)
    # one trial at a time (2 CPUs each): interrupted when the second has started, so the first has finished
    with ctrl_c_when(lambda: len(glob.glob(str(tmp_path / "tune_results" / "*" / "trials" / "*"))) >= 2):
        run_search(["BPR"], name, args, overrides)
    (folder,) = glob.glob(str(tmp_path / "tune_results" / "*"))
    manifest = json.load(open(os.path.join(folder, "search.json")))
    assert manifest["status"] == "interrupted" and manifest["settings"]["search_alg"] == "optuna"
    finished = {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(folder, "trials", "*",
                                                                                     "outcome.json"))}
    assert finished
    stamps = {t: os.path.getmtime(os.path.join(folder, "trials", t, "outcome.json")) for t in finished}

    summary = run_search(["BPR"], name, *parse_args(argv + ["--resume"]))
    assert summary["output_dir"] == folder and summary["n_trials"] == 3 and summary["n_completed"] == 3
    assert {t: os.path.getmtime(os.path.join(folder, "trials", t, "outcome.json")) for t in finished} == stamps
    space = parse_search_space(yaml.safe_load((tmp_path / "space.yaml").read_text()))
    rows = [json.load(open(p)) for p in glob.glob(os.path.join(folder, "trials", "*", "outcome.json"))]
    assert len(rows) == 3
    for outcome in rows:  # every sampled value lies inside its axis
        for key, param in space.params.items():
            assert param.contains(outcome["config"][key]), (key, outcome["config"][key])


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_tuned_benchmark_searches_seeds_tabulates_and_resumes(local_ray, make_mmrec, tmp_path, capsys):
    root, name, _ = make_mmrec()
    argv = ["--model=BPR,LightGCN", f"--dataset={name}", f"--data_path={root}", "--tune=auto", "--num_samples=2",
            "--seeds=2", "--grace_period=1", "--results=out/tuned.json"] + TINY
    assert main(argv) == 0
    result = json.loads((tmp_path / "out" / "tuned.json").read_text())
    folder = result["benchmark_dir"]
    manifest = json.load(open(os.path.join(folder, "benchmark.json")))
    assert manifest["status"] == "done" and manifest["settings"]["budget"] == "exact"
    assert manifest["settings"]["num_samples"] == 2 and manifest["overrides"]["epochs"] == 1
    assert result["seeds"] == [999, 1000]

    for model in ("BPR", "LightGCN"):
        search = result["searches"][model]
        assert search["n_trials"] == 2  # the same budget for both, although LightGCN's grid has 60 points
        outcomes = [json.load(open(p)) for p in glob.glob(os.path.join(search["output_dir"], "trials", "*",
                                                                       "outcome.json"))]
        chosen = search["best"]["params"]
        best_yaml = yaml.safe_load(open(os.path.join(folder, f"{model}.best.yaml")))
        assert all(best_yaml[k] == v for k, v in chosen.items())
        runs = [r for r in result["runs"] if r["model"] == model]
        assert sorted(r["seed"] for r in runs) == [999, 1000] and all(r["status"] == "ok" for r in runs)
        for run in runs:  # the seeded runs use the chosen configuration and the benchmark's epoch cap
            assert all(run["config"][k] == v for k, v in chosen.items()) and run["config"]["epochs"] == 1
            assert run["config"]["seed"] == run["seed"]
        # selection by valid only: the chosen trial has the best valid score of the search
        assert search["best"]["valid"]["recall@20"] == max(o["best_valid_result"]["recall@20"] for o in outcomes)
        row = next(r for r in result["summary"] if r["model"] == model)
        mean = sum(r["test_result"]["recall@20"] for r in runs) / 2
        assert row["recall@20_mean"] == pytest.approx(mean) and row["trials"] == 2
        assert row["chosen"] == json.dumps(chosen, sort_keys=True) and row["cpu_hours"] > 0
    out = capsys.readouterr().out
    assert "| model | chosen configuration | trials | stopped by ASHA |" in out
    assert os.path.isfile(tmp_path / "out" / "tuned.csv")
    # every seeded run's per-user metrics in the sidecars (not in the JSON); significance; the LaTeX table
    run_ids = sorted(r["run_id"] for r in result["runs"])
    assert sorted(r["run_id"] for r in read_sidecar(os.path.join(folder, "runs.users.json.gz"))) == run_ids
    assert sorted(r["run_id"] for r in read_sidecar(str(tmp_path / "out" / "tuned.users.json.gz"))) == run_ids
    assert not any("per_user" in r for r in result["runs"] + _lines(os.path.join(folder, "runs.jsonl")))
    verdicts = {row["model"]: row["vs_best"] for row in result["summary"]}
    best = result["significance"]["best"]
    compared = next(m for m in verdicts if m != best)
    assert verdicts[best] == "best" and verdicts[compared] in ("tied", "different")  # tested, per user
    assert next(r for r in result["summary"] if r["model"] == compared)["recall@20_user_n"] == 32  # the test users
    tex = (tmp_path / "out" / "tuned.tex").read_text()
    assert "best of 2 trials by validation recall@20" in tex and "over 2 seeds" in tex
    assert tex.count(r"\textbf{") >= 4 and r"\begin{tabular}{lcccc}" in tex

    # the table rebuilt from the folder (python -m recbole_ssr.experiments.tune.tuned_benchmark FOLDER) is the same table
    from recbole_ssr.experiments.tune.tuned_benchmark import main as report_main

    assert report_main([folder, "--results=out/again.json"]) == 0
    again = json.loads((tmp_path / "out" / "again.json").read_text())
    assert again["table"] == result["table"] and again["significance"] == result["significance"]
    other = tmp_path / "other"
    other.mkdir()
    json.dump(dict(manifest, settings=dict(manifest["settings"], num_samples=3)), open(other / "benchmark.json", "w"))
    assert report_main([folder, str(other)]) == 2
    assert "cannot share one table" in capsys.readouterr().err

    # interrupted after the searches with one seeded run missing: --resume runs only that one
    runs_path = os.path.join(folder, "runs.jsonl")
    kept = _lines(runs_path)
    with open(runs_path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept[:-1])
    manifest["status"] = "running"
    json.dump(manifest, open(os.path.join(folder, "benchmark.json"), "w"))
    searched = {m: os.path.getmtime(os.path.join(result["searches"][m]["output_dir"], "best.json"))
                for m in ("BPR", "LightGCN")}
    assert main(argv + ["--resume"]) == 0
    again = _lines(runs_path)
    assert len(again) == len(kept) and again[:-1] == kept[:-1]
    assert (again[-1]["model"], again[-1]["seed"]) == (kept[-1]["model"], kept[-1]["seed"])
    assert {m: os.path.getmtime(os.path.join(result["searches"][m]["output_dir"], "best.json"))
            for m in searched} == searched
    assert json.load(open(os.path.join(folder, "benchmark.json")))["status"] == "done"
    resumed = json.loads((tmp_path / "out" / "tuned.json").read_text())  # the rerun's per-user metrics are paired
    assert resumed["significance"]["models"][compared]["vs_best"] in ("tied", "different")
