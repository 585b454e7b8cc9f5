"""recbole_ssr/experiments/eval_band_scale.py: choosing SSR's eval_band_scale on validation from trained runs."""

import json
import os

import pytest

from conftest import QUICK
from recbole_ssr.experiments import eval_band_scale
from recbole_ssr.experiments.run import run


def test_candidates_are_scored_on_the_trained_weights_and_chosen_by_validation(make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    runs = []
    for seed in (1, 2):
        results = str(tmp_path / f"run{seed}.json")
        runs.append(run("SSR", name, config_dict=dict(QUICK, data_path=root, epochs=2, seed=seed), results=results))
        assert os.path.isfile(runs[-1]["checkpoint"])
    chosen = eval_band_scale.main([str(tmp_path / "run1.json"), runs[1]["checkpoint"], "--high=0.5,0",
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
        eval_band_scale.main(["missing.json"])
    root, name, _ = make_mmrec()
    run("BPR", name, config_dict=dict(QUICK, data_path=root), results="bpr.json")
    with pytest.raises(SystemExit, match="a BPR checkpoint; eval_band_scale is an SSR setting"):
        eval_band_scale.main(["bpr.json"])
    run("SSR", name, config_dict=dict(QUICK, data_path=root), results="ssr_saved.json")
    run("SSR", name, config_dict=dict(QUICK, data_path=root), results="ssr.json", saved=False)
    with pytest.raises(SystemExit, match="ssr.json: its 'checkpoint' entry"):
        eval_band_scale.main(["ssr.json"])
    with pytest.raises(SystemExit, match="eval_band_scale: expected ~ or a list of 3 non-negative numbers"):
        eval_band_scale.main(["ssr_saved.json", '--candidates=[[1, 1, "half"]]'])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="junk.pth: not a checkpoint written by a recbole-ssr run"):
        eval_band_scale.main([str(tmp_path / "junk.pth")])


def test_truncated_foreign_and_stale_inputs_are_one_error_line(make_mmrec, tmp_path):
    root, name, frame = make_mmrec()
    trained = run("SSR", name, config_dict=dict(QUICK, data_path=root), results="ssr.json")
    text = open("ssr.json").read()
    open("truncated.json", "w").write(text[: len(text) // 2])
    with pytest.raises(SystemExit, match=r"^error: truncated.json: not a complete JSON file .* truncated"):
        eval_band_scale.main(["truncated.json"])
    json.dump([1, 2], open("list.json", "w"))
    with pytest.raises(SystemExit, match=r"^error: list.json: not the --results JSON of one run"):
        eval_band_scale.main(["list.json"])
    with open(trained["checkpoint"], "rb") as handle:
        open("torn.pth", "wb").write(handle.read()[:1000])
    with pytest.raises(SystemExit, match=r"^error: torn.pth: not a checkpoint written by a recbole-ssr run"):
        eval_band_scale.main(["torn.pth"])
    with pytest.raises(SystemExit, match=r"^error: --results=out.txt: a results file name ends in .json"):
        eval_band_scale.main(["ssr.json", "--results=out.txt"])
    with pytest.raises(SystemExit, match=r"^error: --results ssr.json is also an input of this tool"):
        eval_band_scale.main(["ssr.json", "--results=ssr.json"])

    # the dataset changed since training: same items, other interactions (the recorded fingerprint differs) ...
    inter = f"{root}/{name}/{name}.inter"
    changed = frame[["userID", "itemID", "x_label"]].copy()
    changed.loc[changed.x_label == 0, "itemID"] = (changed.loc[changed.x_label == 0, "itemID"] + 1) % 28
    changed.drop_duplicates(["userID", "itemID"]).to_csv(inter, sep="\t", index=False)
    with pytest.raises(SystemExit, match=r"^error: .*\.pth: trained on another version of dataset 'tiny' than the one "
                                         r"now in .* \(its training interactions differ\)"):
        eval_band_scale.main(["ssr.json"])
    # ... or fewer users, with a checkpoint of an earlier version (no fingerprint): its weights do not fit
    import torch

    checkpoint = torch.load(trained["checkpoint"], weights_only=False)
    checkpoint.pop("data_fingerprint")
    torch.save(checkpoint, "old.pth")
    frame[frame.userID < 30][["userID", "itemID", "x_label"]].to_csv(inter, sep="\t", index=False)
    with pytest.raises(SystemExit, match=r"^error: old.pth: trained on another version of dataset 'tiny' .*: its weights "
                                         r"do not fit"):
        eval_band_scale.main(["old.pth"])
