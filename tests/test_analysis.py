"""The paper's analyses: group evaluation, item cold-start split, ablation variants, band diagnostics, sensitivity,
their reports and plots (recbole_ssr/experiments/analysis, recbole_ssr/data/cold_split.py). Tiny data, a few seconds each."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import QUICK, REPO_ROOT
from recbole_ssr.experiments.analysis import common, run_analysis
from recbole_ssr.experiments.analysis.ablation import plan_variants
from recbole_ssr.experiments.analysis.bands import cross_modal_similarity, energy_shares, gate_weights_by_degree
from recbole_ssr.training.evaluation import bucket_index, bucket_labels, check_bounds, groups_markdown, training_degrees
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.experiments.run import run
from recbole_ssr.training.build import prepare
from recbole_ssr.core.spec import ExperimentSpec
from recbole_ssr.model.registry import get_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BOUNDS = [4, 5]  # the tiny users have 4-6 training items


def tiny(make_mmrec, **extra):
    root, name, frame = make_mmrec()
    return name, frame, dict(QUICK, data_path=root, group_degree_bounds=BOUNDS, **extra)


def build_ssr(config_dict, name, seed=0):
    config, _, loaders = prepare("SSR", name, config_dict=config_dict)
    torch.manual_seed(seed)
    return get_model("SSR")(config, loaders[0].dataset), config, loaders


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC and os.path.getsize(path) > 1024, path


# ---------------------------------------------------------------------------------------------------------------
# group evaluation
# ---------------------------------------------------------------------------------------------------------------
def test_bucket_definitions():
    assert bucket_labels([5, 10, 20]) == ["<=5", "6-10", "11-20", ">20"]
    assert bucket_labels([4, 5]) == ["<=4", "5", ">5"]
    assert bucket_index([0, 5, 6, 10, 11, 20, 21, 500], [5, 10, 20]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for bad in ([10, 5], [5, 5], [-1], "5", []):
        with pytest.raises(ConfigError, match="group_degree_bounds"):
            check_bounds(bad)


@pytest.mark.parametrize("model", ["SSR", "BPR"])
def test_groups_add_up_and_all_equals_recbole_test_result(make_mmrec, model):
    name, frame, config_dict = tiny(make_mmrec, epochs=1)
    outcome = run(model, name, config_dict=config_dict, results="r.json")
    groups = outcome["groups"]
    evaluated = frame.loc[frame.x_label == 2, "userID"].nunique()
    assert groups["all"]["n_users"] == evaluated == 32
    assert sum(g["n_users"] for g in groups["user_degree"].values()) == evaluated
    assert list(groups["user_degree"]) == ["<=4", "5", ">5"] and groups["degree_bounds"] == BOUNDS
    assert {k: groups["all"][k] for k in outcome["test_result"]} == pytest.approx(outcome["test_result"], abs=1e-12)
    assert groups["n_cold_items"] == 2  # the fixture's last two items never occur
    assert json.load(open("r.json"))["groups"] == json.loads(json.dumps(groups))
    table = groups_markdown(groups, ["recall@20"])
    assert "| users <=4 | " in table and table.count("\n") == 7  # header, rule, all, 3 buckets, 2 cold groups


def test_group_values_match_a_direct_computation(make_mmrec):
    """Recall@20 of a bucket and of the cold-item groups recomputed from the model's raw scores."""
    name, _, config_dict = tiny(make_mmrec, epochs=1, cold_item_ratio=0.25)
    state = {}
    outcome = run("SSR", name, config_dict=config_dict, on_ready=lambda m, t, d: state.update(model=m, data=d))
    model, (train, _, test) = state["model"], state["data"]
    model.eval()
    user_e, item_e = model.cached_embeddings()
    scores = (user_e @ item_e.T).detach().numpy()
    history = train.dataset.interaction_csr().toarray() > 0
    scores[history] = -np.inf
    scores[:, 0] = -np.inf
    truth = test.dataset.interaction_csr().toarray() > 0
    user_degree, item_degree = training_degrees(train.dataset)
    cold = item_degree == 0
    cold[0] = False
    top = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    hit = np.take_along_axis(truth, top, axis=1)
    cold_hit = np.take_along_axis(truth & cold, top, axis=1)
    among = np.where(cold, scores, -np.inf)
    cold_hit_among = np.take_along_axis(truth & cold, np.argsort(-among, axis=1, kind="stable")[:, :20], axis=1)
    users = np.flatnonzero(truth.any(1))
    low = users[user_degree[users] <= BOUNDS[0]]
    with_cold = users[(truth & cold)[users].any(1)]
    assert len(with_cold) > 0
    groups = outcome["groups"]
    assert groups["user_degree"]["<=4"]["n_users"] == len(low)
    assert groups["user_degree"]["<=4"]["recall@20"] == pytest.approx(
        np.mean(hit[low].sum(1) / truth[low].sum(1)), abs=6e-5)
    n_cold = (truth & cold)[with_cold].sum(1)
    assert groups["cold_items"]["n_users"] == len(with_cold)
    assert groups["cold_items"]["n_interactions"] == n_cold.sum()
    assert groups["cold_items"]["recall@20"] == pytest.approx(np.mean(cold_hit[with_cold].sum(1) / n_cold), abs=6e-5)
    assert groups["cold_items_among_cold"]["recall@20"] == pytest.approx(
        np.mean(cold_hit_among[with_cold].sum(1) / n_cold), abs=6e-5)


# ---------------------------------------------------------------------------------------------------------------
# item cold-start split
# ---------------------------------------------------------------------------------------------------------------
def test_cold_item_split_holds_items_out_of_training(make_mmrec):
    name, frame, config_dict = tiny(make_mmrec, cold_item_ratio=0.2, cold_item_seed=7)
    config, _, (train, valid, test) = prepare("SSR", name, config_dict=config_dict)
    report = json.load(open(os.path.join(config["data_path"], "cold_items.json")))
    cold = report["valid_cold"] + report["test_cold"]
    assert len(cold) == round(0.2 * report["n_candidates"]) and not set(report["valid_cold"]) & set(report["test_cold"])
    tokens = list(train.dataset.field2id_token["item_id"])
    _, item_degree = training_degrees(train.dataset)
    assert all(item_degree[tokens.index(t)] == 0 for t in cold)
    # every original training interaction of a cold item moved to its half's phase; nothing else moved or got lost
    original = frame.assign(item=frame.itemID.astype(str))
    moved = original[(original.x_label == 0) & original.item.isin(cold)]
    assert report["moved"] == {"valid": int(moved.item.isin(report["valid_cold"]).sum()),
                               "test": int(moved.item.isin(report["test_cold"]).sum())}
    counts = {p: len(d.dataset.inter_feat) for p, d in (("train", train), ("valid", valid), ("test", test))}
    assert counts == {"train": (frame.x_label == 0).sum() - len(moved),
                      "valid": (frame.x_label == 1).sum() + report["moved"]["valid"],
                      "test": (frame.x_label == 2).sum() + report["moved"]["test"]}
    warm = original[(original.x_label == 0) & ~original.item.isin(cold)]
    assert int(train.dataset.interaction_csr().sum()) == len(warm)
    # the same seed reuses the split; another seed holds out other items
    again, _, _ = prepare("SSR", name, config_dict=config_dict)
    assert again["data_path"] == config["data_path"]
    other, _, _ = prepare("SSR", name, config_dict=dict(config_dict, cold_item_seed=8))
    other_report = json.load(open(os.path.join(other["data_path"], "cold_items.json")))
    assert sorted(other_report["valid_cold"] + other_report["test_cold"]) != sorted(cold)


def test_cold_item_split_on_an_atomic_dataset(make_atomic):
    config_dict, name, frame = make_atomic()
    config, _, (train, _, _) = prepare("VBPR", name, config_dict=dict(
        QUICK, **config_dict, cold_item_ratio=0.3, benchmark_filename=["train", "valid", "test"]))
    report = json.load(open(os.path.join(config["data_path"], "cold_items.json")))
    cold = report["valid_cold"] + report["test_cold"]
    assert len(cold) == round(0.3 * report["n_candidates"]) and all(t.startswith("i") for t in cold)
    tokens = list(train.dataset.field2id_token["item_id"])
    _, item_degree = training_degrees(train.dataset)
    assert all(item_degree[tokens.index(t)] == 0 for t in cold)
    assert train.dataset.modality_features["content"].shape[0] == len(tokens)  # features still aligned


def test_cold_item_split_errors(make_mmrec):
    name, _, config_dict = tiny(make_mmrec)
    with pytest.raises(ConfigError, match="cold_item_ratio"):
        prepare("BPR", name, config_dict=dict(config_dict, cold_item_ratio=1.5))
    with pytest.raises(ConfigError, match="fixed train/valid/test split"):
        prepare("BPR", name, config_dict=dict(config_dict, cold_item_ratio=0.1, eval_protocol="recbole"))


# ---------------------------------------------------------------------------------------------------------------
# band diagnostics
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["eigen", "chebyshev"])
def test_band_energy_shares_sum_to_one_and_leave_training_unchanged(make_mmrec, method):
    name, _, config_dict = tiny(make_mmrec, band_method=method, band_num=4)
    model, _, _ = build_ssr(config_dict, name)
    rows = energy_shares(model)
    totals = pd.DataFrame(rows).groupby(["nodes", "modality"])["share"].sum()
    assert len(totals) == 3 * 3 and np.allclose(totals.to_numpy(), 1.0, atol=1e-5)  # all/users/items x id/image/text
    assert {r["band"] for r in rows} == {0, 1, 2, 3}
    # the diagnostic call leaves the decomposer's edge-tracking state (and so training) untouched
    model.decomposer(model.signal()[0])
    state = model.decomposer.state
    before = {k: getattr(state, k) for k in ("calls", "stale", "free_moments", "band_edges", "energy_shares")}
    edges = model.decomposer.band_edges.clone()
    model.band_signal()
    assert model.decomposer.state is state
    assert state.calls == before["calls"] and state.stale == before["stale"]
    assert all(getattr(state, k) is before[k] for k in ("free_moments", "band_edges", "energy_shares"))
    assert torch.equal(model.decomposer.band_edges, edges)


@pytest.mark.parametrize("method", ["eigen", "chebyshev"])
def test_removing_a_band_changes_the_scores(make_mmrec, method):
    name, _, config_dict = tiny(make_mmrec, band_method=method)
    model, _, _ = build_ssr(config_dict, name)
    model.eval()
    users = torch.arange(1, model.n_users)
    full = model.full_sort_predict({model.USER_ID: users}).clone()
    bands, _ = model.band_signal()
    for band in range(model.num_bands):
        model.remove_band_at_inference(band)
        changed = not torch.allclose(model.full_sort_predict({model.USER_ID: users}), full)
        # an empty band (eigen: one mode above 1/M of the energy can leave the low band without modes) is a no-op
        assert changed == bool(bands[:, band].abs().max() > 0), (method, band)
        assert changed or method == "eigen"
    model.remove_band_at_inference(None)
    assert torch.allclose(model.full_sort_predict({model.USER_ID: users}), full)
    with pytest.raises(ConfigError, match="band 3 does not exist"):
        model.remove_band_at_inference(3)


def test_gate_weights_by_degree_and_similarity_rows(make_mmrec):
    name, _, config_dict = tiny(make_mmrec)
    model, config, (train, _, _) = build_ssr(config_dict, name)
    rows = gate_weights_by_degree(model, train.dataset, BOUNDS)
    users = [r for r in rows if r["side"] == "users" and r["band"] == 0]
    assert sum(r["n"] for r in users) == model.n_users - 1  # every real user in one bucket
    assert all(r["weight"] is None or abs(r["weight"] - 1) < 0.2 for r in rows)
    sims = cross_modal_similarity(model, max_nodes=10, seed=0)
    assert {r["pair"] for r in sims} == {"id~image", "id~text", "image~text"}
    assert all(-1 <= r["cos_same"] <= 1 and r["gap"] == pytest.approx(r["cos_same"] - r["cos_random"]) for r in sims)


# ---------------------------------------------------------------------------------------------------------------
# ablation variants
# ---------------------------------------------------------------------------------------------------------------
def spy_terms(model, interaction):
    """Which loss terms/modules the training loss of ``model`` uses."""
    used = set()
    for method in ("mask_consistency_loss", "contrast"):
        real = getattr(model, method)
        setattr(model, method, lambda *a, _m=method, _r=real, **k: used.add(_m) or _r(*a, **k))
    for group in ("operators", "gates"):
        for module in getattr(model, group).values():
            module.register_forward_hook(lambda *_, _g=group: used.add(_g))
    model.train()
    model.calculate_loss(interaction)
    return used


def test_ablation_variants_remove_exactly_their_term(make_mmrec):
    name, _, config_dict = tiny(make_mmrec)
    args = ExperimentSpec()
    settings = common.load_settings({})
    planned, skipped = plan_variants("SSR", name, args, config_dict, settings)
    variants = dict(planned)
    assert list(variants) == ["full", "no_masking", "no_operator", "no_gating", "no_contrastive", "id_only",
                              "only_image", "only_text"] and not skipped
    expected_missing = {"full": set(), "no_masking": {"mask_consistency_loss"}, "no_operator": {"operators"},
                        "no_gating": {"gates"}, "no_contrastive": {"contrast"},
                        "id_only": {"contrast"}, "only_image": {"contrast"},
                        "only_text": {"contrast"}}  # one content modality: nothing to align
    everything = {"mask_consistency_loss", "contrast", "operators", "gates"}
    _, _, (train, _, _) = build_ssr(config_dict, name)
    interaction = next(iter(train))
    for label, extra in variants.items():
        model, _, _ = build_ssr(dict(config_dict, **extra), name)
        assert model.n_items == 31  # every variant ranks the same items (id_only too)
        assert spy_terms(model, interaction) == everything - expected_missing[label], label
        modalities = {"id_only": [], "only_image": ["image"], "only_text": ["text"]}.get(label, ["image", "text"])
        assert model.modality_names == modalities and sorted(model.content_encoders) == sorted(modalities)
    # an ID/content baseline only gets the variants its configuration has
    planned, skipped = plan_variants("VBPR", name, args, config_dict, settings)
    assert [label for label, _ in planned] == ["full", "id_only", "only_image", "only_text"]
    assert {label for label, _ in skipped} == {"no_masking", "no_operator", "no_gating", "no_contrastive"}


# ---------------------------------------------------------------------------------------------------------------
# the four analyses end to end: reports, CSV, JSON and plots
# ---------------------------------------------------------------------------------------------------------------
def analysis_args(tmp_path, **extra):
    return ExperimentSpec(**dict(dict(analysis_output=str(tmp_path / "out"), results=str(tmp_path / "res.json")),
                                 **extra))


def test_ablation_and_groups_analyses_write_tables_and_plots(make_mmrec, tmp_path):
    name, _, config_dict = tiny(make_mmrec, epochs=1, analysis_isolated=False,
                                ablation_variants={"full": {}, "no_gating": {"use_gate": False}})
    folder = run_analysis(["SSR"], name, analysis_args(tmp_path, analysis="ablation"), config_dict)
    assert os.path.basename(folder).startswith(f"ablation-{name}-")
    assert_png(os.path.join(folder, "ablation_recall_20.png"))
    report = open(os.path.join(folder, "ablation.md")).read()
    for label in ("full", "no_gating", "only_image", "only_text", "users <=4 recall@20", "Δ recall@20 vs full"):
        assert label in report
    payload = json.load(open(tmp_path / "res.json"))
    assert payload["analysis"] == "ablation" and len(payload["runs"]) == 4
    assert all(run["groups"]["all"]["n_users"] == 32 for run in payload["runs"])
    assert len(pd.read_csv(os.path.join(folder, "ablation.csv"))) == 4
    progress = [json.loads(line) for line in open(os.path.join(folder, "runs.jsonl"))]  # written run by run
    assert [run["label"] for run in progress] == [run["label"] for run in payload["runs"]]

    folder = run_analysis(["SSR", "BPR"], name, analysis_args(tmp_path, seeds=2, analysis="groups"), config_dict)
    assert_png(os.path.join(folder, "groups_recall_20.png"))
    table = pd.read_csv(os.path.join(folder, "groups.csv"))
    assert set(table.model) == {"SSR", "BPR"} and set(table.seed) == {999, 1000}
    assert set(table.group) == {"all", "users <=4", "users 5", "users >5", "cold items", "cold items (among cold)"}
    assert "| SSR |" in open(os.path.join(folder, "groups.md")).read()


def test_sensitivity_and_bands_analyses_write_tables_and_plots(make_mmrec, tmp_path):
    name, _, config_dict = tiny(make_mmrec, epochs=2, analysis_isolated=False,
                                sensitivity_grid={"band_num": [1, 2], "mask_rate": [0.1, 0.3], "no_such_key": [1]})
    folder = run_analysis(["SSR"], name, analysis_args(tmp_path, analysis="sensitivity"), config_dict)
    for chart in ("sensitivity.png", "sensitivity_band_num.png", "sensitivity_mask_rate.png"):
        assert_png(os.path.join(folder, chart))
    runs = json.load(open(tmp_path / "res.json"))["runs"]
    assert len(runs) == 4 and all(r["status"] == "ok" for r in runs)
    assert [r["config"]["band_num"] for r in runs[:2]] == [1, 2]
    report = open(os.path.join(folder, "sensitivity.md")).read()
    assert "| 0.1 * |" in report and "skipped `no_such_key`" in report  # mask_rate 0.1 is SSR's default

    folder = run_analysis(["SSR"], name, analysis_args(tmp_path, analysis="bands"), dict(config_dict, band_num=3))
    for chart in ("energy_over_training.png", "energy_best.png", "gate_weights_by_degree.png", "band_removal.png",
                  "cross_modal_similarity.png"):
        assert_png(os.path.join(folder, chart))
    history = pd.read_csv(os.path.join(folder, "energy_history.csv"))
    assert sorted(history.epochs_trained.unique()) == [0, 1, 2]  # before training and after each validation
    assert np.allclose(history.groupby(["epochs_trained", "nodes", "modality"]).share.sum(), 1.0, atol=1e-5)
    removal = pd.read_csv(os.path.join(folder, "band_removal.csv"))
    assert list(removal.removed.unique()) == ["none", "band 0 (low)", "band 1 (mid)", "band 2 (high)"]
    for part in ("## Energy share", "## Gate weights", "## Band removed at inference", "## Band-mixing matrices",
                 "## Cross-modal similarity"):
        assert part in open(os.path.join(folder, "bands.md")).read()
    mixing = pd.read_csv(os.path.join(folder, "mixing.csv"))
    assert set(mixing.side) == {"user", "item"} and len(mixing) == 2 * 3 * 3
    assert np.allclose(mixing.groupby(["side", "in_band"]).weight.sum(), 1.0, atol=1e-5)  # column-stochastic
    for side, part in mixing.groupby("side"):  # the recorded distance is the table's own max |S - 1/M|
        assert part.max_abs_from_uniform.iloc[0] == pytest.approx((part.weight - 1 / 3).abs().max(), abs=1e-6)
    with pytest.raises(ConfigError, match="single --model=SSR"):
        run_analysis(["VBPR"], name, analysis_args(tmp_path, analysis="bands"), config_dict)
    with pytest.raises(ConfigError, match="analysis_metric 'recall@50' is not computed"):
        run_analysis(["BPR"], name, analysis_args(tmp_path, analysis="groups"),
                     dict(config_dict, analysis_metric="Recall@50"))


def test_settings_from_config_files_and_command_line(tmp_path):
    extra = tmp_path / "a.yaml"
    extra.write_text("analysis_metric: NDCG@10\nsensitivity_grid: {band_num: [2, 3]}\nlearning_rate: 0.1\n")
    overrides = {"sensitivity_grid": {"cp_rank": [2]}, "learning_rate": 0.5, "analysis_isolated": False}
    settings = common.load_settings(overrides, [str(extra)])
    assert settings["analysis_metric"] == "ndcg@10" and settings["sensitivity_grid"] == {"cp_rank": [2]}
    assert settings["analysis_isolated"] is False and "learning_rate" not in settings
    assert overrides == {"learning_rate": 0.5}  # analysis-only keys do not reach the runs
    with pytest.raises(ConfigError, match="sensitivity_grid"):
        common.load_settings({"sensitivity_grid": {"band_num": []}})


def test_cli_analysis_prints_its_output_folder(make_mmrec, tmp_path):
    root, name, _ = make_mmrec()
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "run_recbole_ssr.py"), "--analysis=groups", "--model=BPR",
         f"--dataset={name}", f"--data_path={root}", "--epochs=1", "--state=ERROR", "--analysis_isolated=False",
         "--analysis_output=out", "--results=r.json", "--group_degree_bounds=[4]"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    folder = next(line.split("output folder ")[1] for line in proc.stdout.splitlines() if "output folder" in line)
    assert folder.startswith(str(tmp_path / "out" / f"groups-{name}-")) and os.path.isfile(f"{folder}/groups.md")
    payload = json.load(open(tmp_path / "r.json"))
    assert list(payload["runs"][0]["groups"]["user_degree"]) == ["<=4", ">4"]

    # the same report from the finished runs, without training (no data_path: nothing is loaded)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "run_recbole_ssr.py"), "--analysis=groups",
         f"--analysis_from={folder}/runs.jsonl", "--analysis_output=again", "--results=again.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Epoch" not in proc.stdout and "training [" not in proc.stdout + proc.stderr
    again = json.load(open(tmp_path / "again.json"))
    assert again["summary"] == payload["summary"] and again["runs"][0]["seed"] == payload["runs"][0]["seed"]
    old_run = {k: v for k, v in payload["runs"][0].items() if k != "groups"}  # as written by an older version
    (tmp_path / "old.json").write_text(json.dumps(dict(old_run, seed=7)))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "run_recbole_ssr.py"), "--analysis=groups",
         f"--analysis_from={folder}/runs.jsonl,old.json", "--analysis_output=again", "--results=again.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 run(s) have no group metrics" in proc.stdout and "BPR seed 7" in proc.stdout
    assert json.load(open(tmp_path / "again.json"))["summary"] == payload["summary"]
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "run_recbole_ssr.py"), "--analysis=ablation",
         f"--analysis_from={folder}/runs.jsonl"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--analysis=groups only" in proc.stderr
