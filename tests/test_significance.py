"""Is the difference real? Per-user test metrics and their sidecar file (recbole_ssr/per_user.py), the tests against
the best model (recbole_ssr/significance.py) and the LaTeX table (recbole_ssr/latex.py)."""

import gzip
import json

import numpy as np
import pytest

from conftest import QUICK
from recbole_ssr import per_user
from recbole_ssr.errors import RecboleSSRError
from recbole_ssr.quick_start import run


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
    per_user.add_to_sidecar(path, [per_user.run_record("BPR", 999, "tiny", entry),
                                   per_user.run_record("SSR", 999, "tiny", per_user.per_user_entry(["x"], {"recall@20": [1.0]}))])
    records = per_user.read_sidecar(path)
    assert [(r["model"], r["seed"]) for r in records] == [("BPR", 999), ("SSR", 999)]  # SSR's record replaced
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
