"""A real multi-node Ray cluster on this machine (a head and a worker node, each its own raylet): a 2-model x
2-seed side-by-side grid with --address runs its (model, seed) runs as Ray tasks spread over both nodes, and the
table the driver writes is the one of the runs' own results. One of the two models is a model file outside the
package (``--model=file.py:Class``): every task resolves it again on its node, and a node without the file reports
a failed run naming the file and the node."""

import json
import os
import shutil
import socket

import pytest

from conftest import REPO_ROOT
from recbole_ssr.cli import main
from recbole_ssr.training.per_user import read_sidecar


@pytest.fixture
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized()
    previous = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_USAGE_STATS_ENABLED", None)


def test_side_by_side_grid_runs_on_every_node_of_a_cluster(two_node_cluster, make_mmrec, tmp_path):
    import ray

    root, name, _ = make_mmrec()
    os.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for file in ("mean_fusion.py", "MeanFusion.yaml"):
        shutil.copy(os.path.join(REPO_ROOT, "examples", file), tmp_path / "models" / file)
    code = main(["--model=models/mean_fusion.py:MeanFusion,LightGCN", f"--dataset={name}", "--data_path=data",
                 "--seeds=2",
                 f"--address={two_node_cluster.address}", "--cpus_per_run=1", "--epochs=2", "--state=ERROR",
                 "--train_batch_size=64", "--results=out/cluster.json"])
    assert code == 0
    assert not ray.is_initialized()  # the command disconnects from the cluster it joined
    result = json.loads((tmp_path / "out" / "cluster.json").read_text())
    runs = result["runs"]
    assert sorted((r["model"], r["seed"]) for r in runs) == [("LightGCN", 999), ("LightGCN", 1000),
                                                             ("MeanFusion", 999), ("MeanFusion", 1000)]
    assert all(r["status"] == "ok" for r in runs), [r.get("error") for r in runs]
    source = f"{tmp_path / 'models' / 'mean_fusion.py'}:MeanFusion"  # the spec each task received, absolute
    assert all(r["model_source"] == source for r in runs if r["model"] == "MeanFusion")
    node_ids = {node.node_id for node in two_node_cluster.list_all_nodes()}
    assert len(node_ids) == 2
    assert len({r["node_id"] for r in runs}) > 1 and {r["node_id"] for r in runs} <= node_ids
    assert all(r["config"]["data_root"] == str(root) for r in runs)  # resolved by the driver
    for row in result["summary"]:
        mine = [r for r in runs if r["model"] == row["model"]]
        for metric in ("recall@20", "ndcg@10"):
            assert row[f"{metric}_mean"] == pytest.approx(sum(r["test_result"][metric] for r in mine) / len(mine))
        marker = {"tied": "†"}.get(row["vs_best"], "")  # tested from the per-user metrics the nodes sent back
        assert row["vs_best"] in ("best", "tied", "different")
        table_line = next(line for line in result["table"].splitlines()
                          if line.startswith(f"| {row['model']}{marker} |"))
        assert f"{row['recall@20_mean']:.4f}" in table_line
    # every run is also in the progress file, as it finished
    with open(tmp_path / "out" / "cluster.runs.jsonl") as f:
        assert len([line for line in f if line.strip()]) == 4
    records = read_sidecar(str(tmp_path / "out" / "cluster.users.json.gz"))  # written by the driver
    assert sorted(r["run_id"] for r in records) == sorted(r["run_id"] for r in runs)

    # a node that lacks the model file: the task fails with an error naming the file and the node
    from recbole_ssr.experiments.runner import RayBatch, RunSpec, ray_session

    gone = tmp_path / "elsewhere" / "gone.py"
    with ray_session(two_node_cluster.address):
        batch = RayBatch(label="cluster")
        batch.submit(RunSpec(f"{gone}:Gone", name, 999, {"data_path": root, "epochs": 1, "state": "ERROR"}))
        (_, outcome), = list(batch.results())
    assert outcome["status"] == "failed" and outcome["model"] == "Gone"
    assert f"model file {gone} does not exist" in outcome["error"]
    assert f"[on Ray node {socket.gethostname()}, id {outcome['node_id'][:12]}]" in outcome["error"]
