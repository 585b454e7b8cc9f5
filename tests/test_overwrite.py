"""Issue 20: nothing a typo can destroy. A run replaces only a file this project wrote for the same kind of output
(docs/errors.md, "Files are never lost"); JSON is strict (no NaN); a side-by-side batch resumes from its runs log,
which is only ever appended to, and one batch at a time writes a results path."""

import errno
import functools
import json
import os
import re
import signal

import pytest

from conftest import QUICK
from recbole_ssr import cli
from recbole_ssr.core import safe_io
from recbole_ssr.experiments import runner, side_by_side
from recbole_ssr.core.errors import ConfigError, RecboleSSRError
from recbole_ssr.core.spec import ExperimentSpec
from recbole_ssr.core.safe_io import (append_jsonl, check_may_replace, exclusive_lock, read_jsonl, results_identity,
                                 stamped, write_json)


def strict_load(path):
    """json.load that refuses NaN/Infinity, as strict parsers (JavaScript, jq, Go) do."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle, parse_constant=refuse)


def run_cli(capfd, *argv):
    status = cli.main(list(argv))
    return status, capfd.readouterr().err


def tiny_args(root, name, *extra, model="VBPR"):
    return [f"--model={model}", f"--dataset={name}", f"--data_path={root}",
            *[f"--{k}={v}" for k, v in QUICK.items()], *extra]


@pytest.fixture
def never_train(monkeypatch):
    from recbole_ssr.training.trainer import MultimodalTrainer

    def refuse(*args, **kwargs):
        raise AssertionError("training started although the problem was knowable before it")

    monkeypatch.setattr(MultimodalTrainer, "fit", refuse)


# ----------------------------------------------------------------------------------------------- the replace rule
def test_only_own_output_of_the_same_kind_model_and_dataset_is_replaced(tmp_path):
    ours = tmp_path / "ssr.json"
    write_json(ours, stamped({"model": "SSR", "dataset": "tiny", "test_result": {}}, "run", ["SSR"], "tiny"))
    check_may_replace(str(ours), "run", ["SSR"], "tiny")  # a re-run replaces its own file
    for kind, models, dataset in (("run", ["BPR"], "tiny"), ("run", ["SSR"], "baby"),
                                  ("side-by-side", ["SSR"], "tiny"), ("search", ["SSR"], "tiny")):
        with pytest.raises(ConfigError, match=r"--results .*ssr.json already exists and holds the run results of SSR "
                                              r"on tiny; .*--overwrite"):
            check_may_replace(str(ours), kind, models, dataset)
    check_may_replace(str(ours), "run", ["BPR"], "tiny", overwrite=True)

    # files of earlier versions (no marker) count as ours by their layout
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({"model": "BPR", "dataset": "tiny", "test_result": {"recall@20": 0.1}}))
    assert results_identity(json.loads(legacy.read_text())) == ("run", ("BPR",), "tiny")
    check_may_replace(str(legacy), "run", ["BPR"], "tiny")
    with pytest.raises(ConfigError, match="holds the run results of BPR on tiny"):
        check_may_replace(str(legacy), "run", ["SSR"], "tiny")
    batch = {"dataset": "tiny", "models": ["B", "A"], "seeds": [1], "summary": [], "runs": []}
    assert results_identity(batch) == ("side-by-side", ("A", "B"), "tiny")
    check_may_replace_file = tmp_path / "batch.json"
    check_may_replace_file.write_text(json.dumps(batch))
    check_may_replace(str(check_may_replace_file), "side-by-side", ["A", "B"], "tiny")  # order does not matter

    # anything else is refused, even what merely looks like JSON; an input of the run even with --overwrite
    for name, content in (("notes.json", "my notes"), ("list.json", "[1, 2]"), ("other.json", '{"a": 1}')):
        (tmp_path / name).write_text(content)
        with pytest.raises(ConfigError, match=f"{name} already exists and holds a file recbole-ssr did not write"):
            check_may_replace(str(tmp_path / name), "run", ["SSR"], "tiny")
    with pytest.raises(ConfigError, match="is also a config file .* of this run"):
        check_may_replace(str(ours), "run", ["SSR"], "tiny", overwrite=True,
                          inputs={str(ours): "a config file (--config_files)"})


@pytest.mark.parametrize("case", ["foreign file", "dataset file", "other model", "not json", "empty",
                                  "side-by-side foreign csv", "side-by-side foreign log", "folder"])
def test_a_run_never_replaces_what_it_did_not_write(make_mmrec, tmp_path, capfd, never_train, case):
    root, name, _ = make_mmrec()
    inter = f"{root}/{name}/{name}.inter"
    extra, target, model = [], None, "VBPR"
    if case == "foreign file":
        target = tmp_path / "notes.json"
        target.write_text("my notes, not results")
    elif case == "dataset file":
        target = inter
    elif case == "other model":
        target = tmp_path / "ssr.json"
        write_json(target, stamped({"model": "SSR", "dataset": name, "test_result": {}}, "run", ["SSR"], name))
    elif case == "not json":
        extra = [f"--results={tmp_path / 'out.txt'}"]
    elif case == "empty":
        extra = ["--results="]
    elif case == "side-by-side foreign csv":
        (tmp_path / "bench.csv").write_text("my,own,table\n1,2,3\n")
        target, model = tmp_path / "bench.csv", "VBPR,BPR"
        extra = [f"--results={tmp_path / 'bench.json'}"]
    elif case == "side-by-side foreign log":
        (tmp_path / "bench.runs.jsonl").write_text('{"my": "log"}\n')
        target, model = tmp_path / "bench.runs.jsonl", "VBPR,BPR"
        extra = [f"--results={tmp_path / 'bench.json'}"]
    elif case == "folder":
        (tmp_path / "out.json").mkdir()
        extra = [f"--results={tmp_path / 'out.json'}"]
    if not extra:
        extra = [f"--results={target}"]
    before = open(target, "rb").read() if target else None
    status, err = run_cli(capfd, *tiny_args(root, name, *extra, model=model))
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    expected = {
        "foreign file": r"notes.json already exists and holds a file recbole-ssr did not write.*--overwrite",
        "dataset file": r"--results=.*tiny.inter: a results file name ends in .json \(e.g. --results=.*tiny.json\)",
        "other model": r"ssr.json already exists and holds the run results of SSR on tiny; this run of VBPR",
        "not json": r"out.txt: a results file name ends in .json \(e.g. --results=.*out.json\)",
        "empty": r"--results is empty",
        "side-by-side foreign csv": r"bench.csv already exists and is not a table recbole-ssr wrote.*--overwrite",
        "side-by-side foreign log": r"bench.runs.jsonl exists but is not a runs log",
        "folder": r"out.json is a folder",
    }[case]
    assert re.search(expected, err), err
    if target is not None:
        assert open(target, "rb").read() == before


def test_overwrite_allows_a_foreign_file_and_a_rerun_replaces_its_own(make_mmrec, tmp_path, capfd):
    root, name, _ = make_mmrec()
    target = tmp_path / "r.json"
    target.write_text("notes")
    status, err = run_cli(capfd, *tiny_args(root, name, f"--results={target}", "--overwrite"))
    assert status == 0, err
    first = strict_load(target)
    assert first["written_by"] == {"program": "recbole-ssr", "kind": "run", "models": ["VBPR"], "dataset": name}
    status, err = run_cli(capfd, *tiny_args(root, name, f"--results={target}", "--seed=5"))  # its own file: no flag
    assert status == 0, err
    assert strict_load(target)["config"]["seed"] == 5 and first["config"]["seed"] == 999


# ---------------------------------------------------------------------------------------------------- strict JSON
def test_json_never_holds_nan_or_infinity(tmp_path):
    payload = {"mean": float("nan"), "rows": [{"std": float("inf")}], "pair": [1.0, float("nan")], "ok": 1.5}
    write_json(tmp_path / "a.json", payload)
    loaded = strict_load(tmp_path / "a.json")
    assert loaded["mean"] is None and "NaN" in loaded["mean_null_reason"]
    assert loaded["rows"][0]["std"] is None and "Infinity" in loaded["rows"][0]["std_null_reason"]
    assert loaded["pair"] == [1.0, None] and loaded["pair_null_reason"].startswith("item 1 was NaN")
    assert loaded["ok"] == 1.5
    append_jsonl(tmp_path / "r.jsonl", {"model": "X", "status": "ok", "score": float("nan")})
    (record,), _ = read_jsonl(tmp_path / "r.jsonl")
    assert record["score"] is None and record["score_null_reason"]

    # a batch whose every run failed: the summary's means are NaN in memory, null with a reason on disk
    runs = [{"model": "BPR", "seed": 1, "status": "failed", "error": "boom"}]
    side_by_side.write_outputs("tiny", ["BPR"], [1], runs, str(tmp_path / "b.json"))
    summary = strict_load(tmp_path / "b.json")["summary"][0]
    assert summary["recall@20_mean"] is None and summary["recall@20_mean_null_reason"]


def test_seeds_below_one_are_refused(capfd):
    for value in ("0", "-1"):
        status, err = run_cli(capfd, "--model=BPR", f"--seeds={value}")
        assert status == 2 and err == f"error: --seeds={value}: expected a whole number >= 1 (the number of seeds " \
                                      "every model runs with).\n"


# ----------------------------------------------------------------------------------------- resumable side-by-side
def test_an_interrupted_batch_resumes_and_its_log_is_only_appended(make_mmrec, tmp_path, monkeypatch, capsys):
    root, name, _ = make_mmrec()
    monkeypatch.setattr(side_by_side, "run_many", functools.partial(runner.run_many, isolated=False))
    real, calls = runner.run_in_process, []

    def interrupted_second_run(*args):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the batch
        return real(*args)

    monkeypatch.setattr(runner, "run_in_process", interrupted_second_run)
    results = str(tmp_path / "bench.json")
    overrides = dict(QUICK, data_path=root)
    with pytest.raises(KeyboardInterrupt):
        side_by_side.run_side_by_side(["VBPR", "BPR"], name, ExperimentSpec(seeds=2, results=results), overrides)
    assert "interrupted: 1 of 4 run(s) finished and are kept in" in capsys.readouterr().out
    log = tmp_path / "bench.runs.jsonl"
    kept = log.read_bytes()
    assert len(kept.splitlines()) == 1 and not (tmp_path / "bench.lock").exists()

    monkeypatch.setattr(runner, "run_in_process", real)
    trained = []
    monkeypatch.setattr(runner, "run_in_process", lambda *args: trained.append(args[0]) or real(*args))
    rows, runs = side_by_side.run_side_by_side(["VBPR", "BPR"], name, ExperimentSpec(seeds=2, results=results),
                                               overrides)
    out = capsys.readouterr().out
    assert "1 of 4 run(s) reused from" in out and len(trained) == 3
    assert log.read_bytes().startswith(kept) and len(log.read_bytes().splitlines()) == 4  # appended, not rewritten
    assert [(r["model"], r["seed"]) for r in runs] == [("VBPR", 999), ("VBPR", 1000), ("BPR", 999), ("BPR", 1000)]
    assert runs[0] == json.loads(kept)  # the finished run itself, not a retrained one
    assert strict_load(results)["written_by"]["kind"] == "side-by-side"

    # the same command again: everything reused; another configuration: nothing reused, the log only grows
    trained.clear()
    side_by_side.run_side_by_side(["VBPR", "BPR"], name, ExperimentSpec(seeds=2, results=results), overrides)
    assert "4 of 4 run(s) reused" in capsys.readouterr().out and trained == []
    side_by_side.run_side_by_side(["VBPR", "BPR"], name, ExperimentSpec(seeds=1, results=results),
                                   dict(overrides, learning_rate=0.01))
    assert "2 finished run(s) there have another configuration" in capsys.readouterr().out and len(trained) == 2
    assert len(log.read_bytes().splitlines()) == 6


def test_a_torn_last_line_is_skipped_with_its_line_number(tmp_path, capsys):
    log = tmp_path / "bench.runs.jsonl"
    metrics = {"recall@10": 0.3, "recall@20": 0.5, "ndcg@10": 0.2, "ndcg@20": 0.25}
    good = {"model": "BPR", "dataset": "tiny", "seed": 1, "status": "ok", "test_result": metrics,
            "best_valid_result": metrics, "best_epoch": 0, "epochs_run": 1, "seconds_per_epoch": 0.1,
            "n_params": 10, "peak_rss_mb": 100.0}
    append_jsonl(log, good)
    with open(log, "a") as handle:
        handle.write("\n")  # a blank line: line numbers count it
        handle.write('{"model": "BPR", "seed": 2, "sta')  # killed mid-write
    records, skipped = read_jsonl(log)
    assert records == [good] and skipped == [3]
    assert "bench.runs.jsonl line 3 is not a complete JSON record" in capsys.readouterr().err
    append_jsonl(log, dict(good, seed=2))  # a resumed batch appends on a line of its own
    records, skipped = read_jsonl(log)
    assert [r["seed"] for r in records] == [1, 2] and skipped == [3]
    rows = side_by_side.merge([str(log)], str(tmp_path / "merged.json"))
    assert rows[0]["runs_ok"] == 2


def test_one_batch_at_a_time_per_results_path(tmp_path, capsys):
    lock = str(tmp_path / "bench.lock")
    with exclusive_lock(lock, "--results bench.json"):
        with pytest.raises(ConfigError, match=rf"--results bench.json is in use by process {os.getpid()}"):
            with exclusive_lock(lock, "--results bench.json"):
                pass
    assert not os.path.exists(lock)
    # a lock left by a killed batch (its process is gone) is taken over with a warning
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(lock, "w") as handle:
        handle.write(f"{socket.gethostname()} {int(dead.stdout)}\n")
    with exclusive_lock(lock, "--results bench.json"):
        assert open(lock).read().split() == [socket.gethostname(), str(os.getpid())]
    assert f"was left by process {int(dead.stdout)}, which is no longer running" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- a write that fails
def test_a_failed_results_write_names_the_file_and_keeps_the_metrics(make_mmrec, tmp_path, monkeypatch, capfd):
    root, name, _ = make_mmrec()
    rescue_dir = tmp_path / "rescue"
    rescue_dir.mkdir()
    monkeypatch.setattr(safe_io.tempfile, "tempdir", str(rescue_dir))
    real_dump = json.dump

    def disk_full(payload, handle, *args, **kwargs):
        if os.path.basename(handle.name).startswith(".r.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(payload, handle, *args, **kwargs)

    monkeypatch.setattr(json, "dump", disk_full)
    status, err = run_cli(capfd, *tiny_args(root, name, f"--results={tmp_path / 'r.json'}"))
    assert status == 2 and err.count("\n") == 1, err
    assert re.search(r"error: writing --results .*r.json failed \(No space left on device\); the finished results are "
                     r"kept in .*rescue.*r.json\. Test: recall@10=.*Checkpoint: .*\.pth\. Free some space", err), err
    (rescued,) = os.listdir(rescue_dir)
    assert strict_load(rescue_dir / rescued)["model"] == "VBPR" and not (tmp_path / "r.json").exists()

    # a write that fails says which file, not its temporary name
    with pytest.raises(OSError) as caught:
        with safe_io.atomic_write(tmp_path / "ckpt.pth", "wb") as handle:
            raise OSError(errno.ENOSPC, "No space left on device", handle.name)
    assert caught.value.filename == str(tmp_path / "ckpt.pth")


# ------------------------------------------------------------------------------------------------------- prepare
def test_prepare_refuses_to_replace_a_file_edited_since_it_wrote_it(tmp_path):
    import numpy as np
    import pandas as pd

    from recbole_ssr.data.prepare import PrepareError, prepare_dataset

    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}") for u in range(12) for i in rng.choice(9, size=5, replace=False)]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(tmp_path / "raw.csv", index=False)
    out = tmp_path / "out"
    quiet = lambda message: None  # noqa: E731
    prepare_dataset(tmp_path / "raw.csv", out, "x", kcore=0, log=quiet)
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert set(summary["sha256"]) == set(summary["files"]) - {"prepare_summary.json"}
    prepare_dataset(tmp_path / "raw.csv", out, "x", kcore=0, log=quiet)  # unchanged: replaced
    with open(out / "x.inter", "a") as handle:
        handle.write("my edit\n")
    edited = (out / "x.inter").read_bytes()
    with pytest.raises(PrepareError, match="x.inter changed since prepare wrote it .* --overwrite"):
        prepare_dataset(tmp_path / "raw.csv", out, "x", kcore=0, log=quiet)
    assert (out / "x.inter").read_bytes() == edited
    prepare_dataset(tmp_path / "raw.csv", out, "x", kcore=0, log=quiet, overwrite=True)
    assert (out / "x.inter").read_bytes() != edited


# ---------------------------------------------------------------------------------------------------------- Ctrl-C
def _sigint_disposition():
    return signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_an_isolated_run_ignores_ctrl_c_so_only_the_parent_reports_it():
    """The child of an isolated run is started with SIGINT ignored (inherited through exec): Ctrl-C, which the
    terminal sends to the whole process group, reaches the parent only, which stops the child (no child traceback)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with runner._sigint_ignored():
        with context.Pool(1) as pool:
            ignored = pool.apply(_sigint_disposition)
    assert ignored and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _die(*args):
    os._exit(3)


def test_the_runner_reports_a_child_that_died(monkeypatch):
    monkeypatch.setattr(runner, "_child", _die)
    outcome = runner.run_isolated("BPR", "x", [], {})
    assert outcome == {"status": "failed", "error": "worker process died: exit status 3"}
