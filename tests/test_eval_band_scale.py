"""benchmarks/ssr_eval_band_scale.py: choosing SSR's eval_band_scale on validation from trained runs."""

import json
import os
import sys

import pytest

from conftest import QUICK, REPO_ROOT
from recbole_ssr.quick_start import run

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
import ssr_eval_band_scale  # noqa: E402


def test_candidates_are_scored_on_the_trained_weights_and_chosen_by_validation(make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    runs = []
    for seed in (1, 2):
        results = str(tmp_path / f"run{seed}.json")
        runs.append(run("SSR", name, config_dict=dict(QUICK, data_path=root, epochs=2, seed=seed), results=results))
        assert os.path.isfile(runs[-1]["checkpoint"])
    chosen = ssr_eval_band_scale.main([str(tmp_path / "run1.json"), runs[1]["checkpoint"], "--high=0.5,0",
                                       "--results=choice.json"])
    out = json.load(open("choice.json"))
    assert [c["scale"] for c in out["runs"][0]["candidates"]] == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.5], [1.0, 1.0, 0.0]]
    for evaluated, trained in zip(out["runs"], runs):
        # every multiplier 1 = the trained model: the run's own valid and test results, from its checkpoint
        ones = evaluated["candidates"][0]
        assert ones["valid"] == pytest.approx(trained["best_valid_result"])
        assert ones["test"] == pytest.approx(trained["test_result"])
        assert evaluated["seed"] == trained["config"]["seed"]
    means = [sum(r["candidates"][k]["valid"]["recall@20"] for r in out["runs"]) / 2 for k in range(3)]
    best = max(range(3), key=lambda k: (means[k], -k))
    assert chosen == out["chosen"] == out["summary"][best]["scale"]
    assert out["summary"][best]["valid"][0] == pytest.approx(means[best])


def test_bad_runs_are_clear_errors(make_mmrec, tmp_path, capsys):
    with pytest.raises(SystemExit, match="missing.json: no such file"):
        ssr_eval_band_scale.main(["missing.json"])
    root, name, _ = make_mmrec()
    run("BPR", name, config_dict=dict(QUICK, data_path=root), results="bpr.json")
    with pytest.raises(SystemExit, match="a BPR checkpoint; eval_band_scale is an SSR setting"):
        ssr_eval_band_scale.main(["bpr.json"])
    run("SSR", name, config_dict=dict(QUICK, data_path=root), results="ssr_saved.json")
    run("SSR", name, config_dict=dict(QUICK, data_path=root), results="ssr.json", saved=False)
    with pytest.raises(SystemExit, match="ssr.json: its 'checkpoint' entry"):
        ssr_eval_band_scale.main(["ssr.json"])
    with pytest.raises(SystemExit, match="eval_band_scale: expected ~ or a list of 3 non-negative numbers"):
        ssr_eval_band_scale.main(["ssr_saved.json", '--candidates=[[1, 1, "half"]]'])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="junk.pth: not a checkpoint written by a recbole-ssr run"):
        ssr_eval_band_scale.main([str(tmp_path / "junk.pth")])
