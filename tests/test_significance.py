"""Is the difference real? Per-user test metrics and their sidecar file (recbole_ssr/training/per_user.py), the tests against
the best model (recbole_ssr/experiments/significance.py) and the LaTeX table (recbole_ssr/experiments/latex.py)."""

import gzip
import json

import numpy as np
import pytest

from conftest import QUICK
from recbole_ssr.core import report
from recbole_ssr.experiments import latex, significance
from recbole_ssr.training import per_user
from recbole_ssr.core.errors import RecboleSSRError
from recbole_ssr.experiments.run import run


# ---------------------------------------------------------------------------------------------------------------
# per-user metrics
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["mmrec", "recbole"])
def test_per_user_means_are_recbole_test_metrics(make_mmrec, protocol):
    """The mean of the per-user values is RecBole's test result (rounded by it to 12 places here), users keyed by
    their token, and only users with a test item."""
    root, name, frame = make_mmrec()
    config_dict = dict(QUICK, data_path=root, epochs=2, eval_protocol=protocol, metric_decimal_place=12,
                       metrics=["Recall", "NDCG", "Hit", "MRR"], topk=[5, 20])
    state = {}
    outcome = run("BPR", name, config_dict=config_dict, on_ready=lambda m, t, d: state.update(trainer=t, data=d))
    entry = state["trainer"].evaluate_per_user(state["data"][2])
    assert set(entry["metrics"]) == set(outcome["test_result"]) == {
        "recall@5", "recall@20", "ndcg@5", "ndcg@20", "hit@5", "hit@20", "mrr@5", "mrr@20"}
    assert per_user.means(entry) == pytest.approx(outcome["test_result"], abs=2e-12)
    assert all(len(values) == len(entry["users"]) for values in entry["metrics"].values())
    assert len(set(entry["users"])) == len(entry["users"])
    if protocol == "mmrec":  # the fixture's x_label split: every fifth user has no test item
        with_test = {str(u) for u in frame.loc[frame.x_label == 2, "userID"]}
        assert set(entry["users"]) == with_test and len(with_test) == 32
    else:  # RecBole's random split: exactly the users the test loader holds
        test_dataset = state["data"][2]._dataset
        held = test_dataset.id2token(test_dataset.uid_field, np.unique(test_dataset.inter_feat[test_dataset.uid_field]))
        assert set(entry["users"]) == set(held.tolist())
    recall = np.asarray(entry["metrics"]["recall@20"])
    assert ((recall >= 0) & (recall <= 1)).all() and recall.max() > 0


def test_sidecar_round_trip_is_exact_and_atomic(tmp_path):
    rng = np.random.default_rng(0)
    values = {"recall@20": rng.random(50), "ndcg@20": rng.random(50) / 3}
    entry = per_user.per_user_entry([f"u{i}" for i in range(50)], values)
    path = per_user.sidecar_path(str(tmp_path / "bench.json"))
    assert path == str(tmp_path / "bench.users.json.gz")
    assert per_user.sidecar_path("out/bench.runs.jsonl") == "out/bench.users.json.gz"
    per_user.write_sidecar(path, [per_user.run_record("SSR", 999, "tiny", entry)])
    replacement = per_user.per_user_entry(["x"], {"recall@20": [1.0]})
    per_user.add_to_sidecar(path, [per_user.run_record("BPR", 999, "tiny", entry),
                                   per_user.run_record("SSR", 999, "tiny", replacement)])
    records = per_user.read_sidecar(path)
    assert [(r["model"], r["seed"]) for r in records] == [("BPR", 999), ("SSR", 999)]  # SSR's record replaced
    assert records[1]["users"] == ["x"]
    assert np.array_equal(np.asarray(records[0]["metrics"]["ndcg@20"]), values["ndcg@20"])  # bit-identical
    assert [p.name for p in tmp_path.iterdir()] == ["bench.users.json.gz"]  # no temporary file left behind
    found, missing = per_user.load_sidecars([str(tmp_path / "bench.json"), str(tmp_path / "other.json")])
    assert set(found) == {("BPR", 999), ("SSR", 999)} and missing == [str(tmp_path / "other.json")]


@pytest.mark.parametrize("content, message", [
    (b"not gzip", "cannot read the per-user metrics"),
    (gzip.compress(b'{"runs": []}'), "not a per-user metrics file"),
    (gzip.compress(json.dumps({"format": per_user.FORMAT, "version": 1, "runs": [
        {"model": "SSR", "seed": 1, "dataset": "d", "users": ["a", "b"], "metrics": {"recall@20": [0.1]}}]}).encode()),
     "has 2 users but"),
])
def test_a_damaged_sidecar_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "r.users.json.gz"
    path.write_bytes(content)
    with pytest.raises(RecboleSSRError, match=message) as caught:
        per_user.read_sidecar(str(path))
    assert str(path) in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------
# significance against the best model
# ---------------------------------------------------------------------------------------------------------------
def constructed(models, seeds=(1, 2, 3), n_users=400):
    """Runs and per-user entries of constructed models: ``models`` maps a name to (valid score, f(base, seed) ->
    per-user Recall@20 values); NDCG@20 is half of Recall@20. Test metrics are the per-user means."""
    rng = np.random.default_rng(7)
    base = rng.random(n_users) * (rng.random(n_users) < 0.6)  # many users at 0, as in real top-k metrics
    tokens = [f"u{i}" for i in range(n_users)]
    runs, entries = [], {}
    for model, (valid, values_of) in models.items():
        for seed in seeds:
            recall = np.clip(values_of(base, seed), 0, 1)
            entries[(model, seed)] = per_user.per_user_entry(tokens, {"recall@20": recall, "ndcg@20": recall / 2})
            runs.append({"model": model, "seed": seed, "status": "ok",
                         "best_valid_result": {"recall@20": valid + seed * 1e-4},
                         "test_result": per_user.means(entries[(model, seed)])})
    return runs, entries


def noise(scale):
    return lambda base, seed: np.clip(base + np.random.default_rng(seed).normal(0, scale, len(base)), 0, 0.99)


def alternating(values_of, delta=0.001):
    """``values_of`` with +delta and -delta on alternate users who have a value: no systematic difference."""
    def shifted(base, seed):
        values = values_of(base, seed)
        signs = np.where(np.arange(len(values)) % 2 == 0, 1.0, -1.0)
        return values + delta * signs * (values > delta)
    return shifted


def test_holm_matches_a_hand_computation():
    # sorted: .005 (x4 = .02), .01 (x3 = .03), .03 (x2 = .06), .04 (x1 = .04 -> raised to .06 by monotonicity)
    assert significance.holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert significance.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert significance.holm([0.02]) == [0.02] and significance.holm([None]) == [None] and significance.holm([]) == []


def test_paired_tests_on_degenerate_vectors():
    assert significance.wilcoxon_paired([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])["p"] == 1.0  # all differences 0
    assert significance.wilcoxon_paired([0.0, 0.0], [0.0, 0.0])["relative_change"] is None  # best at 0: no ratio
    # d = (1, -2, 3, 4, 0): the 0 is dropped; ranks 1..4, W- = 2; P(W- <= 2) = #{{}, {1}, {2}} / 2^4, two-sided x2
    hand = significance.wilcoxon_paired([1.0, 3.0, 0.0, 0.0, 0.5], [2.0, 1.0, 3.0, 4.0, 0.5])
    assert (hand["n_users"], hand["n_nonzero"], hand["statistic"]) == (5, 4, 2.0) and hand["p"] == pytest.approx(6 / 16)
    assert hand["mean_diff"] == pytest.approx(6 / 5) and hand["relative_change"] == pytest.approx((6 / 5) / (4.5 / 5))
    assert significance.ttest_paired([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == {
        "n_seeds": 3, "mean_diff": 0.0, "statistic": 0.0, "p": 1.0}
    shifted = significance.ttest_paired([0.1, 0.2, 0.3], [0.15, 0.25, 0.35])  # the same gain on every seed
    assert shifted["p"] == 0.0 and shifted["statistic"] is None and shifted["mean_diff"] == pytest.approx(0.05)
    regular = significance.ttest_paired([0.1, 0.2, 0.3], [0.12, 0.21, 0.35])
    differences = np.array([0.02, 0.01, 0.05])
    assert regular["statistic"] == pytest.approx(differences.mean() / (differences.std(ddof=1) / np.sqrt(3)))


def test_equal_differences_from_different_float_routes_are_tied_ranks():
    """Seed-averaged values: half the users gain 1/3 (1/3 -> 2/3), half lose 1/3 (1 -> 2/3). In floats the two
    differences are 0.3333333333333333 and -0.33333333333333337; ranked unrounded, every loss outranks every gain and
    a perfectly symmetric comparison looked significant (p = 4e-19 here)."""
    third, two_thirds = np.mean([1.0, 0.0, 0.0]), np.mean([1.0, 1.0, 0.0])
    best = np.array([third] * 200 + [1.0] * 200)
    other = np.full(400, two_thirds)
    assert len({abs(d) for d in other - best}) == 2  # the float noise this test is about
    result = significance.wilcoxon_paired(best, other)
    assert result["n_nonzero"] == 400 and result["p"] == pytest.approx(1.0)
    assert result["statistic"] == pytest.approx(400 * 401 / 4)  # W+ = W-: each half of the tied ranks
    # rounding does not move the zero rule: a difference under 1e-12 is still no difference (not rounded up to it)
    assert significance.wilcoxon_paired([0.5, 0.5], [0.5 + 7e-13, 0.5])["n_nonzero"] == 0


def test_an_identical_model_is_tied_with_p_one():
    same = lambda base, seed: base + 0.01 * seed  # noqa: E731
    runs, entries = constructed({"A": (0.30, same), "B": (0.20, same)})
    result = significance.compare_to_best(runs, entries)
    assert result["best"] == "A"
    b = result["models"]["B"]
    for metric in ("recall@20", "ndcg@20"):
        assert b["per_user"][metric]["p"] == 1.0 and b["per_user"][metric]["p_holm"] == 1.0
        assert b["per_user"][metric]["n_users"] == 400 and b["per_user"][metric]["mean_diff"] == 0.0
        assert b["per_seed"][metric]["p"] == 1.0  # identical seed values: no crash, p = 1
    assert b["vs_best"] == "tied" and significance.marker(result, "B") == significance.MARKER
    assert significance.marker(result, "A") == "" and result["models"]["A"]["vs_best"] == "best"


def test_a_clearly_dominated_model_differs_after_holm():
    runs, entries = constructed({"Strong": (0.30, noise(0.01)), "Tied": (0.25, alternating(noise(0.01))),
                                 "Weak": (0.20, lambda b, s: 0.7 * noise(0.01)(b, s))})
    result = significance.compare_to_best(runs, entries)
    weak, tied = result["models"]["Weak"], result["models"]["Tied"]
    for metric in ("recall@20", "ndcg@20"):
        weak_p, tied_p = weak["per_user"][metric]["p"], tied["per_user"][metric]["p"]
        assert weak_p < tied_p  # Holm over the two compared models: the smaller p doubled, the larger kept
        assert weak["per_user"][metric]["p_holm"] == pytest.approx(2 * weak_p) and 2 * weak_p < 0.05
        assert tied["per_user"][metric]["p_holm"] == pytest.approx(max(tied_p, 2 * weak_p)) and tied_p > 0.5
        assert weak["per_seed"][metric]["p_holm"] < 0.05 and weak["per_user"][metric]["mean_diff"] < 0
    strong_mean = np.mean([np.mean(entries[("Strong", s)]["metrics"]["recall@20"]) for s in (1, 2, 3)])
    weak_mean = np.mean([np.mean(entries[("Weak", s)]["metrics"]["recall@20"]) for s in (1, 2, 3)])
    assert weak["per_user"]["recall@20"]["relative_change"] == pytest.approx((weak_mean - strong_mean) / strong_mean)
    assert (weak["vs_best"], tied["vs_best"]) == ("different", "tied")
    assert [significance.marker(result, m) for m in ("Strong", "Tied", "Weak")] == ["", "†", ""]
    columns = significance.significance_columns(result, "Weak")
    assert columns["vs_best"] == "different" and columns["recall@20_user_p_holm"] < 0.05
    assert columns["recall@20_seed_p"] == weak["per_seed"]["recall@20"]["p"] and columns["significance_note"] == ""


def test_the_marker_follows_holm_not_the_raw_p():
    """A difference significant alone (61 users up, 39 down by the same amount: p ~ 0.03) but not after Holm over
    three compared models (p x 3 ~ 0.08): tied."""
    users = [f"u{i}" for i in range(100)]
    best = np.full(100, 0.5)
    models = {"Best": best, "Borderline": best + 0.01 * np.where(np.arange(100) < 61, 1, -1), "Same": best,
              "Same2": best}
    runs = [{"model": m, "seed": 1, "status": "ok", "best_valid_result": {"recall@20": valid}, "test_result": {}}
            for m, valid in zip(models, (0.4, 0.3, 0.2, 0.1))]
    entries = {(m, 1): per_user.per_user_entry(users, {"recall@20": v}) for m, v in models.items()}
    result = significance.compare_to_best(runs, entries, metrics=["recall@20"])
    test = result["models"]["Borderline"]["per_user"]["recall@20"]
    assert test["p"] < 0.05 < test["p_holm"] and test["p_holm"] == pytest.approx(3 * test["p"])
    assert result["models"]["Borderline"]["vs_best"] == "tied"


def test_the_best_is_chosen_on_validation_not_test():
    runs, entries = constructed({"ValidBest": (0.30, lambda b, s: 0.8 * b), "TestBest": (0.20, lambda b, s: b)})
    result = significance.compare_to_best(runs, entries, metrics=["Recall@20", "NDCG@20"], select_metric="Recall@20")
    assert result["best"] == "ValidBest" and result["metrics"] == ["recall@20", "ndcg@20"]
    assert result["models"]["TestBest"]["per_user"]["recall@20"]["mean_diff"] > 0  # better on test, still compared
    assert result["models"]["TestBest"]["vs_best"] == "different"


def test_one_seed_missing_per_user_data_and_failed_runs_are_reported_not_crashed():
    runs, entries = constructed({"A": (0.3, noise(0.01)), "NoUsers": (0.2, noise(0.01)), "B": (0.1, noise(0.2))},
                                seeds=(5,))
    entries = {key: entry for key, entry in entries.items() if key[0] != "NoUsers"}
    runs.append({"model": "Broken", "seed": 5, "status": "failed", "error": "boom"})
    result = significance.compare_to_best(runs, entries)
    no_users = result["models"]["NoUsers"]
    assert no_users["vs_best"] == "not tested" and "no per-user metrics" in no_users["note"]
    assert significance.marker(result, "NoUsers") == significance.UNTESTED
    assert "p_holm" not in no_users["per_user"]["recall@20"]
    assert result["models"]["B"]["per_seed"]["recall@20"] == {
        "not_tested": "1 seed(s) paired with the best; the t-test needs 3 or more"}
    alone = result["models"]["B"]["per_user"]["recall@20"]  # the only model tested: Holm leaves its p as it is
    assert alone["p_holm"] == alone["p"] < 0.05
    assert result["models"]["Broken"]["role"] == "failed" and significance.marker(result, "Broken") == ""
    assert "t-test: 1 seed(s)" in significance.significance_columns(result, "B")["significance_note"]
    assert "? : not tested" not in significance.legend(result) and "?: not tested" in significance.legend(result)
    without_best = significance.compare_to_best(runs, {k: v for k, v in entries.items() if k[0] != "A"})
    assert "the best model (A) has no per-user metrics" in without_best["models"]["B"]["note"]


def test_per_user_values_average_seeds_and_pair_only_common_users():
    first = per_user.per_user_entry(["a", "b"], {"recall@20": [0.2, 0.4]})
    second = per_user.per_user_entry(["b", "c"], {"recall@20": [0.8, 1.0]})
    tokens, values = significance.user_values([first, second], "recall@20")
    assert tokens.tolist() == ["a", "b", "c"] and values == pytest.approx([0.2, 0.6, 1.0])
    runs = [{"model": "X", "seed": 1, "status": "ok", "best_valid_result": {"recall@20": 0.5}, "test_result": {}},
            {"model": "Y", "seed": 1, "status": "ok", "best_valid_result": {"recall@20": 0.1}, "test_result": {}}]
    other = per_user.per_user_entry(["c", "d", "b"], {"recall@20": [0.5, 0.0, 0.6]})
    result = significance.compare_to_best(runs + [dict(runs[0], seed=2)], {("X", 1): first, ("X", 2): second,
                                                                            ("Y", 1): other}, metrics=["recall@20"])
    test = result["models"]["Y"]["per_user"]["recall@20"]
    assert test["n_users"] == 2 and test["n_nonzero"] == 1 and test["mean_diff"] == pytest.approx(-0.25)  # b: 0, c: -.5


def test_a_missing_selection_metric_is_one_clear_error():
    runs, entries = constructed({"A": (0.3, noise(0.01))})
    with pytest.raises(RecboleSSRError, match="no validation ndcg@50.*recall@20"):
        significance.compare_to_best(runs, entries, select_metric="ndcg@50")


def test_real_runs_through_sidecar_files_to_the_table(make_mmrec, tmp_path):
    """Three trained BPR runs and the same runs filed again under another name (identical models), through the
    results JSON and its sidecar as a merge reads them: tied with the best, p = 1 per user and per seed."""
    root, name, _ = make_mmrec()
    config_dict = dict(QUICK, data_path=root, epochs=1)
    runs, records = [], []
    for seed in (1, 2, 3):
        state = {}
        outcome = run("BPR", name, config_dict=dict(config_dict, seed=seed),
                      on_ready=lambda m, t, d: state.update(trainer=t, data=d))
        entry = state["trainer"].evaluate_per_user(state["data"][2])
        for model in ("BPR", "BPR copy"):
            runs.append(dict(outcome, model=model, seed=seed, status="ok"))
            records.append(per_user.run_record(model, seed, name, entry))
    results = str(tmp_path / "bench.json")
    with open(results, "w") as f:
        json.dump({"runs": runs}, f, default=str)
    per_user.write_sidecar(per_user.sidecar_path(results), records)
    loaded, missing = per_user.load_sidecars([results])
    assert missing == [] and len(loaded) == 6
    result = significance.compare_to_best(report.load_runs([results]), loaded)
    copy = result["models"]["BPR copy"]
    assert result["best"] == "BPR" and copy["vs_best"] == "tied"  # equal validation: the first listed is the best
    assert copy["per_user"]["recall@20"]["p"] == 1.0 and copy["per_user"]["recall@20"]["n_users"] == 32
    assert copy["per_seed"]["ndcg@20"]["p"] == 1.0
    rows = [{"model": m, "runs_ok": 3, "recall@20_mean": 0.1, "recall@20_std": 0.0} for m in ("BPR", "BPR copy")]
    assert r"BPR copy$^{\dagger}$ & \textbf{0.1000}" in latex.latex_table(rows, ["recall@20"], 3, significance=result)


# ---------------------------------------------------------------------------------------------------------------
# the LaTeX table
# ---------------------------------------------------------------------------------------------------------------
def summary_row(model, recall, ndcg, runs_ok=3):
    return {"model": model, "runs_ok": runs_ok, "recall@20_mean": recall, "recall@20_std": 0.001,
            "ndcg@20_mean": ndcg, "ndcg@20_std": 0.0005}


def test_tex_table_structure_emphasis_and_markers():
    runs, entries = constructed({"My_Model": (0.30, noise(0.01)), "Tied": (0.25, alternating(noise(0.01))),
                                 "Weak&Co": (0.20, lambda b, s: 0.7 * b)})
    result = significance.compare_to_best(runs, entries)
    rows = [summary_row("My_Model", 0.0943, 0.0512), summary_row("Tied", 0.09431, 0.0530, runs_ok=2),
            summary_row("Weak&Co", 0.0700, 0.0520), {"model": "Broken", "runs_ok": 0}]
    tex = latex.latex_table(rows, ["recall@20", "ndcg@20"], 3, significance=result, dataset="tiny_set")
    lines = tex.splitlines()
    assert lines[0] == r"\begin{table}[t]" and lines[-1] == r"\end{table}"
    body = lines[lines.index(r"\toprule"):]
    assert [line for line in body if line.endswith("rule")] == [r"\toprule", r"\midrule", r"\bottomrule"]
    assert r"\begin{tabular}{lcc}" in lines and body[1] == r"Model & Recall@20 & NDCG@20 \\"
    caption = next(line for line in lines if line.startswith(r"\caption{"))
    assert "over 3 seeds" in caption and r"$^{\dagger}$: not significantly different from My\_Model" in caption
    assert "tiny\\_set" in caption
    rows_tex = {line.split(" & ")[0]: line for line in body[3:7]}
    # Recall@20: 0.0943 and 0.09431 print alike -> both bold; 0.0700 underlined (second distinct value)
    assert rows_tex["My\\_Model"] == r"My\_Model & \textbf{0.0943}\,{\scriptsize$\pm$0.0010} & " \
                                     r"0.0512\,{\scriptsize$\pm$0.0005} \\"
    assert rows_tex[r"Tied$^{\dagger}$ {\scriptsize(2 of 3 seeds)}"].split(" & ")[1:] == [
        r"\textbf{0.0943}\,{\scriptsize$\pm$0.0010}", r"\textbf{0.0530}\,{\scriptsize$\pm$0.0005} \\"]
    assert rows_tex[r"Weak\&Co"].split(" & ")[1:] == [r"\underline{0.0700}\,{\scriptsize$\pm$0.0010}",
                                                      r"\underline{0.0520}\,{\scriptsize$\pm$0.0005} \\"]
    assert rows_tex["Broken"] == r"Broken & \multicolumn{2}{c}{failed} \\"
    assert tex.count(r"\textbf{") == 3 and tex.count(r"\underline{") == 2
    plain = latex.latex_table(rows[:1], ["recall@20"], 1, with_std=False)
    assert r"\textbf{0.0943} \\" in plain and "epoch: one seed." in plain and "dagger" not in plain
    one_run = latex.latex_table([summary_row("Solo", 0.0943, 0.0512, runs_ok=1)], ["recall@20"], 1)
    assert r"Solo & \textbf{0.0943} \\" in one_run and r"\pm" not in one_run  # one run: no spread to show


def test_latex_escaping_and_atomic_write(tmp_path):
    assert latex.escape(r"a_b&c%d$e#f{g}h~i^j\k") == \
        r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    assert latex.column_ranks([0.1, 0.3, None, 0.3, 0.2]) == [None, 1, None, 1, 2]
    assert latex.tex_path("out/bench.json") == "out/bench.tex"
    path = tmp_path / "bench.tex"
    latex.write_latex(str(path), "x\n")
    assert path.read_text() == "x\n" and [p.name for p in tmp_path.iterdir()] == ["bench.tex"]
