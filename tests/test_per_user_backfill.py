"""Per-user metrics recomputed from a run's checkpoint (experiments/per_user_backfill.py) equal the ones the run
kept itself, and a checkpoint that does not reproduce its run is refused."""

import json
import os

from conftest import QUICK
from recbole_ssr.experiments import per_user_backfill
from recbole_ssr.experiments.run import run
from recbole_ssr.training import per_user


def test_backfill_recomputes_exactly_what_the_run_kept(make_mmrec, tmp_path, capsys):
    root, name, _ = make_mmrec()
    results = str(tmp_path / "bpr.json")
    run("BPR", name, config_dict=dict(QUICK, data_path=root, epochs=2), results=results)
    sidecar = per_user.sidecar_path(results)
    kept = per_user.read_sidecar(sidecar)
    os.remove(sidecar)  # as a run made before runs kept per-user metrics
    assert per_user_backfill.main([results]) == 0
    assert per_user.read_sidecar(sidecar) == kept  # bit-identical values, same run_id
    assert per_user_backfill.backfill([results]) == {results: "already there"}

    payload = json.load(open(results))
    payload["test_result"]["recall@20"] += 0.01
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(payload))
    os.remove(sidecar)
    capsys.readouterr()
    assert per_user_backfill.main([str(tampered), results]) == 2  # the good run still gets its metrics
    err = capsys.readouterr().err
    assert "1 of 2 run(s) got no per-user metrics" in err
    assert "tampered.json: its checkpoint does not reproduce the run's test metrics" in err
    assert not os.path.exists(per_user.sidecar_path(str(tampered)))
    assert per_user.read_sidecar(sidecar) == kept


def test_backfill_needs_a_single_run_with_its_checkpoint(make_mmrec, tmp_path, capsys):
    root, name, _ = make_mmrec()
    results = str(tmp_path / "unsaved.json")
    run("BPR", name, config_dict=dict(QUICK, data_path=root), saved=False, results=results)
    assert per_user_backfill.main([results]) == 2
    assert "is not a file: the run was made without saving" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"runs": []}))
    assert per_user_backfill.main([str(other)]) == 2
    assert "not the --results JSON of one run" in capsys.readouterr().err
    assert per_user_backfill.main([]) == 2
    assert "required: files" in capsys.readouterr().err
