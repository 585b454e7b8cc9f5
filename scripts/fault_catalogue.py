#!/usr/bin/env python
"""Reliability catalogue: bad inputs and faults against the real command lines, on tiny generated
data.

    python scripts/fault_catalogue.py                 # every case, a markdown table on stdout
    python scripts/fault_catalogue.py --only cache    # the cases whose name contains 'cache'
    python scripts/fault_catalogue.py --skip-slow     # without the two-first-runs-of-ml-100k case (~1-2 min)
    python scripts/fault_catalogue.py --repo OTHER    # the same cases against another checkout (e.g. before a fix)

Each case runs ``run_recbole_ssr.py`` or ``python -m recbole_ssr.data.prepare`` in a fresh temporary folder. A case is
*clean* when the command ends as expected: a fault ends with a non-zero exit, its last stderr line is one
``error: ...`` sentence matching the case's pattern, there is no traceback and no warning on stderr, and the case's
check of the files holds (nothing lost, nothing half-written); a valid input ends with exit 0, its check holds and
(when the case has a pattern) stderr says what it should; an interrupted batch (Ctrl-C) ends with exit 130, no
traceback, and its check holds.
Exit status: 0 when every case is clean, 1 otherwise. docs/errors.md describes the classes.
"""

import argparse
import glob
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = [sys.executable, os.path.join(REPO, "run_recbole_ssr.py")]
BAND_SCALE = [sys.executable, "-m", "recbole_ssr.experiments.eval_band_scale"]
PREPARE = [sys.executable, "-m", "recbole_ssr.data.prepare"]
QUICK = ["--epochs=1", "--train_batch_size=64", "--eval_batch_size=100000", "--stopping_step=1"]


# ------------------------------------------------------------------------------------------------ tiny data
def write_mmrec(root, name="tiny", n_users=40, n_items=30, rows=None, seed=0):
    """An MMRec folder: <root>/<name>/<name>.inter (userID itemID x_label) + image (16-d) and text (8-d) features."""
    rng = np.random.default_rng(seed)
    records = []
    for user in range(n_users):
        items = rng.choice(n_items - 2, size=6, replace=False)
        labels = [0, 0, 0, 0, 1 if user % 3 else 0, 2 if user % 5 else 0]
        records += [(user, int(i), label) for i, label in zip(items, labels)]
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    pd.DataFrame(records, columns=["userID", "itemID", "x_label"]).to_csv(
        os.path.join(folder, f"{name}.inter"), sep="\t", index=False)
    rows = rows or {}
    for modality, dim in (("image", 16), ("text", 8)):
        np.save(os.path.join(folder, f"{modality}_feat.npy"),
                rng.normal(size=(rows.get(modality, n_items), dim)).astype(np.float32))
    return folder


def write_raw(path, n_users=30, n_items=20, seed=0):
    rng = np.random.default_rng(seed)
    pairs = [(f"u{u}", f"i{i}") for u in range(n_users) for i in rng.choice(n_items, size=6, replace=False)]
    pd.DataFrame(pairs, columns=["user_id", "item_id"]).to_csv(path, index=False)
    return path


def snapshot(folder):
    return {os.path.relpath(p, folder): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(folder, "**"), recursive=True)) if os.path.isfile(p)}


def checkpoints_load(work):
    import torch

    paths = glob.glob(os.path.join(work, "saved", "*.pth"))
    for path in paths:
        torch.load(path, map_location="cpu", weights_only=False)
    return bool(paths)


def runner(*extra, model="VBPR"):
    return RUNNER + [f"--model={model}", "--dataset=tiny", "--data_path=data", *QUICK, *extra]


# ------------------------------------------------------------------------------------------------ the cases
class Case:
    """``env``: variables set for the command, each a path relative to the case's working folder."""

    def __init__(self, name, fault_class, command, expect="error", pattern=None, setup=None, check=None, env=None,
                 limit_file_size=None, run=None):
        self.name, self.fault_class, self.command, self.expect = name, fault_class, command, expect
        self.pattern, self.setup, self.check, self.env = pattern, setup, check, env
        self.limit_file_size, self.run = limit_file_size, run


def with_data(extra=None):
    def setup(work):
        write_mmrec(os.path.join(work, "data"), **(extra or {}))
    return setup


def foreign_dataset_folder(work):
    write_mmrec(os.path.join(work, "copy"), name="tiktok")
    write_raw(os.path.join(work, "raw.csv"))
    return snapshot(os.path.join(work, "copy"))


def prepared_twice(work):
    write_raw(os.path.join(work, "raw.csv"))
    subprocess.run(PREPARE + ["--interactions", "raw.csv", "--output", "out", "--name", "first", "--kcore", "0",
                              "--quiet"], cwd=work, check=True)


def existing_results(work):
    """An earlier run's own results (this run may replace them, but must not when it fails)."""
    with_data()(work)
    with open(os.path.join(work, "results.json"), "w") as handle:
        json.dump(stamped_results("run", "VBPR"), handle)
    return snapshot(work)["results.json"]


def kill_during_training(work, env):
    """SIGKILL a long training once it has saved a checkpoint; every checkpoint left must load."""
    with_data()(work)
    process = subprocess.Popen(runner("--epochs=400", "--stopping_step=400", "--eval_step=0"), cwd=work, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not glob.glob(os.path.join(work, "saved", "*.pth")):
        time.sleep(0.2)
    time.sleep(1.5)  # a few more epochs: saves keep happening
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate()
    return process.returncode, err


def concurrent(commands_for):
    def run(work, env):
        processes = [subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True) for command in commands_for(work)]
        errors = [p.communicate()[1] for p in processes]
        codes = [p.returncode for p in processes]
        return max(codes, key=abs), "\n".join(errors)
    return run


def cases():
    listing = []
    add = listing.append
    # 1. data lost
    add(Case("prepare into a folder it did not write", "1 data lost",
             PREPARE + ["--interactions", "raw.csv", "--output", "copy/tiktok", "--name", "tiktok", "--kcore", "0"],
             pattern=r"already holds files this command did not write", setup=foreign_dataset_folder,
             check=lambda work, before: snapshot(os.path.join(work, "copy")) == before))
    add(Case("prepare re-run replaces its own folder whole", "1 data lost",
             PREPARE + ["--interactions", "raw.csv", "--output", "out", "--name", "second", "--kcore", "0", "--quiet"],
             expect="ok", setup=prepared_twice,
             check=lambda work, _: sorted(os.listdir(os.path.join(work, "out")))
             == ["i_id_mapping.csv", "prepare_summary.json", "second.inter", "u_id_mapping.csv"]))
    add(Case("prepare with the disk full (file size limit)", "1 data lost",
             PREPARE + ["--interactions", "raw.csv", "--output", "out", "--name", "second", "--kcore", "0", "--quiet"],
             pattern=r"writing the dataset failed .* left as it was", setup=prepared_twice, limit_file_size=1500,
             check=lambda work, _: "first.inter" in os.listdir(os.path.join(work, "out"))
             and "second.inter" not in os.listdir(os.path.join(work, "out")) and len(os.listdir(work)) == 2))
    add(Case("SIGKILL during training: checkpoints still load", "1 data lost", None, expect="killed",
             run=kill_during_training, check=lambda work, _: checkpoints_load(work)))
    add(Case("failed run keeps an existing --results file", "1 data lost",
             runner("--results=results.json", "--learning_rat=0.1"), pattern=r"unknown configuration key",
             setup=existing_results, check=lambda work, before: snapshot(work)["results.json"] == before))
    # 2. a finished training thrown away
    no_training = lambda work, _: not glob.glob(os.path.join(work, "saved", "*.pth"))  # noqa: E731
    for name, extra, pattern in (
            ("--results is a folder", ["--results=data"], r"--results .* is a folder"),
            ("--results under a file", ["--results=data/tiny/tiny.inter/r.json"], r"its folder .* is a file"),
            ("--checkpoint_dir cannot be written", ["--checkpoint_dir=data/tiny/tiny.inter/ckpt"],
             r"checkpoint_dir .* cannot be written"),
            ("--valid_metric=foo@20", ["--valid_metric=foo@20"], r"valid_metric 'foo@20'"),
            ("--valid_metric=Recall@50 (not in topk)", ["--valid_metric=Recall@50"], r"cut-off @50 is not in topk")):
        add(Case(name, "2 training thrown away", runner(*extra), pattern=pattern, setup=with_data(), check=no_training))
    add(Case("side-by-side with --results a folder", "2 training thrown away",
             RUNNER + ["--model=VBPR,BPR", "--dataset=tiny", "--data_path=data", *QUICK, "--results=data"],
             pattern=r"--results .* is a folder", setup=with_data(), check=no_training))
    # 3. settings silently wrong
    for name, extra, pattern in (
            ("unknown key on the command line", ["--learning_rat=0.01"], r"'learning_rat'.*did you mean 'learning_rate'"),
            ("--epochs=-1", ["--epochs=-1"], r"epochs=-1 .*out of range"),
            ("--embedding_size=0", ["--embedding_size=0"], r"embedding_size=0 .*out of range"),
            ("--train_batch_size=0", ["--train_batch_size=0"], r"train_batch_size=0 .*out of range"),
            ("--epochs=1.5", ["--epochs=1.5"], r"epochs=1.5 .*whole number"),
            ("--reproducibility=maybe", ["--reproducibility=maybe"], r"expected True or False"),
            ("--dropout=1.5", ["--dropout=1.5"], r"dropout=1.5 .*out of range")):
        add(Case(name, "3 settings silently wrong", runner(*extra), pattern=pattern, setup=with_data(),
                 check=no_training))

    def yaml_with(text):
        def setup(work):
            with_data()(work)
            with open(os.path.join(work, "c.yaml"), "w") as handle:
                handle.write(text)
        return setup
    def yaml_with_name(file_name, text):
        def setup(work):
            with_data()(work)
            with open(os.path.join(work, file_name), "w") as handle:
                handle.write(text)
        return setup
    add(Case("unknown key in a yaml", "3 settings silently wrong", runner("--config_files=c.yaml"),
             pattern=r"'learning_rat' \(from .*c.yaml\); did you mean 'learning_rate'",
             setup=yaml_with("learning_rat: 0.01\n")))
    add(Case("deliberate extra key declared with extra_keys", "3 settings silently wrong",
             runner("--config_files=c.yaml"), expect="ok", setup=yaml_with("my_flag: 1\nextra_keys: [my_flag]\n")))
    for short in ("image", "text"):
        add(Case(f"modality files disagree ({short} short)", "3 settings silently wrong", runner(),
                 pattern=r"disagree on the number of items", setup=with_data({"rows": {short: 28}})))
    # 4. tracebacks where a sentence belongs
    def empty_inter(work):
        folder = write_mmrec(os.path.join(work, "data"))
        open(os.path.join(folder, "tiny.inter"), "w").close()

    def log_is_a_file(work):
        with_data()(work)
        open(os.path.join(work, "log"), "w").close()
    add(Case("0-byte .inter", "4 traceback", runner(), pattern=r"tiny.inter is empty \(0 bytes\)", setup=empty_inter))
    add(Case("--cache_dir=~ (no cache)", "4 traceback", runner("--cache_dir=~"), expect="ok", setup=with_data(),
             check=lambda work, _: not os.path.exists(os.path.join(work, "dataset"))))
    add(Case("--cache_dir cannot be written", "4 traceback", runner("--cache_dir=data/tiny/tiny.inter/c"),
             pattern=r"cache_dir .* cannot be written", setup=with_data()))
    add(Case("working directory's ./log cannot be written", "4 traceback", runner(),
             pattern=r"RecBole's log folder .*/log is a file.*working directory", setup=log_is_a_file))
    add(Case("malformed yaml", "4 traceback", runner("--config_files=c.yaml"), pattern=r"not valid YAML \(at line 2",
             setup=yaml_with("epochs: [1\n")))
    add(Case("malformed yaml with --analysis", "4 traceback",
             runner("--config_files=c.yaml", "--analysis=groups"), pattern=r"not valid YAML \(at line 2",
             setup=yaml_with("epochs: [1\n")))
    add(Case("yaml that is a list", "4 traceback", runner("--config_files=c.yaml"), pattern=r"holds a list",
             setup=yaml_with("- epochs: 1\n")))
    add(Case("missing --config_files", "4 traceback", runner("--config_files=nope.yaml"), pattern=r"does not exist",
             setup=with_data()))
    for name, extra, pattern in (
            ("--learning_rate=abc", ["--learning_rate=abc"], r"learning_rate='abc'.*expected a number"),
            ("--epochs=abc", ["--epochs=abc"], r"epochs='abc'.*whole number"),
            ("--seed=abc", ["--seed=abc"], r"seed='abc'.*whole number"),
            ("--learning_rate=-1", ["--learning_rate=-1"], r"learning_rate=-1 .*out of range"),
            ("--band_num=0", ["--band_num=0", "--model=SSR"], r"band_num=0 .*out of range"),  # SSR's key
            ("--metrics=[Foo]", ["--metrics=[Foo]"], r"'Foo' is not a RecBole metric"),
            ("--topk=[0]", ["--topk=[0]"], r"topk"),
            ("unknown model", ["--model=VBPRR"], r"unknown model 'VBPRR'"),
            ("argument without =", ["--epochs", "3"], r"cannot parse argument"),
            ("missing dataset", ["--dataset=nothere"], r"dataset 'nothere' not found")):
        add(Case(name, "4 traceback", runner(*extra), pattern=pattern, setup=with_data()))

    def nan_feature(work):
        folder = write_mmrec(os.path.join(work, "data"))
        bad = np.ones((30, 16), dtype=np.float32)
        bad[3, 1] = np.nan
        np.save(os.path.join(folder, "image_feat.npy"), bad)
    add(Case("NaN in a feature file", "4 traceback", runner(), pattern=r"rows contain NaN", setup=nan_feature))
    add(Case("prepare: interactions file missing", "4 traceback",
             PREPARE + ["--interactions", "none.csv", "--output", "out", "--name", "x"], pattern=r"none.csv"))
    add(Case("--tune: misspelt key in the search space", "3 settings silently wrong",
             runner("--tune=space.yaml", "--num_samples=1"), pattern=r"'learning_rat' \(from the search space\)",
             setup=yaml_with_name("space.yaml", "learning_rat: {grid: [0.001, 0.01]}\n")))
    add(Case("--tune: search space that is not yaml", "4 traceback", runner("--tune=space.yaml"),
             pattern=r"space.yaml", setup=yaml_with_name("space.yaml", "reg_weight: {grid: [0.1\n")))
    # 5. messages that mislead
    add(Case("--use_modalities=[image] (brackets)", "5 misleading message", runner("--use_modalities=[image]"),
             expect="ok", setup=with_data()))
    add(Case("--use_modalities=[] with VBPR", "5 misleading message", runner("--use_modalities=[]"),
             pattern=r"selects 0 modalities, but VBPR needs at least 1", setup=with_data()))
    add(Case("no RecBole FutureWarning on a good run", "5 misleading message", runner(), expect="ok",
             setup=with_data()))
    add(Case("two first runs convert the same dataset at once", "5 misleading message", None, expect="ok",
             setup=with_data(), run=concurrent(lambda work: [runner(), runner()])))
    add(Case("two first runs build the embedded ml-100k at once", "5 misleading message", None, expect="ok",
             run=concurrent(lambda work: [RUNNER + ["--model=VBPR", "--data_path=emb", *QUICK]] * 2),
             check=lambda work, _: os.listdir(os.path.join(work, "emb")) == ["ml-100k"]))
    listing += issue_20_cases()
    return listing


# ---------------------------------------------------------------------------------------------- the hostile test
def stamped_results(kind, model, dataset="tiny"):
    """What this project writes as --results (the provenance marker and the keys of a run's results)."""
    return {"written_by": {"program": "recbole-ssr", "kind": kind, "models": [model], "dataset": dataset},
            "model": model, "dataset": dataset, "test_result": {"recall@20": 0.5}}


def with_file(name, content):
    """Tiny data plus a file ``name`` (text, or a JSON payload); returns its bytes (the check compares them)."""
    def setup(work):
        with_data()(work)
        with open(os.path.join(work, name), "w") as handle:
            handle.write(content if isinstance(content, str) else json.dumps(content))
        return open(os.path.join(work, name), "rb").read()
    return setup


def unchanged(name):
    return lambda work, before: open(os.path.join(work, name), "rb").read() == before


def batch(*extra, seeds=2, results="b.json", models="BPR"):
    return RUNNER + [f"--model={models}", "--dataset=tiny", "--data_path=data", *QUICK, f"--seeds={seeds}",
                     f"--results={results}", *extra]


def log_lines(work, name="b.runs.jsonl"):
    with open(os.path.join(work, name), "rb") as handle:
        return handle.read().splitlines()


def finished_batch(seeds=2, torn=False):
    """Tiny data and a finished side-by-side batch (its runs log is returned for the check)."""
    def setup(work):
        with_data()(work)
        subprocess.run(batch(seeds=seeds), cwd=work, env=case_env(), check=True, capture_output=True)
        if torn:
            with open(os.path.join(work, "b.runs.jsonl"), "a") as handle:
                handle.write('{"model": "BPR", "status": "ok", "seed": 10')  # a kill in the middle of a write
        return open(os.path.join(work, "b.runs.jsonl"), "rb").read()
    return setup


def interrupted_batch(work, env):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once the batch has finished a run."""
    with_data()(work)
    process = subprocess.Popen(batch("--epochs=40", "--stopping_step=40", "--eval_step=1", models="BPR,VBPR",
                                     seeds=1), cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not (
            os.path.isfile(os.path.join(work, "b.runs.jsonl")) and os.path.getsize(os.path.join(work, "b.runs.jsonl"))):
        time.sleep(0.2)
    time.sleep(4)  # the next run's process is starting or training
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def two_batches_at_once(work, env):
    """A second batch on the same --results while the first runs: refused; the first finishes whole."""
    with_data()(work)
    first = subprocess.Popen(batch(), cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(os.path.exists(os.path.join(work, f)) for f in ("b.lock", "b.runs.jsonl")):
        time.sleep(0.1)
    second = subprocess.run(batch(), cwd=work, env=env, capture_output=True, text=True, timeout=600)
    first.communicate(timeout=600)
    return (second.returncode if first.returncode == 0 else first.returncode), second.stderr


def stale_checkpoint(work):
    """An SSR run, then its dataset edited (fewer users): the run's checkpoint belongs to another version of it."""
    with_data()(work)
    subprocess.run(RUNNER + ["--model=SSR", "--dataset=tiny", "--data_path=data", *QUICK, "--results=ssr.json"],
                   cwd=work, env=case_env(), check=True, capture_output=True)
    inter = os.path.join(work, "data", "tiny", "tiny.inter")
    frame = pd.read_csv(inter, sep="\t")
    frame[frame.userID < 30].to_csv(inter, sep="\t", index=False)


def ssr_results(work):
    with_data()(work)
    subprocess.run(RUNNER + ["--model=SSR", "--dataset=tiny", "--data_path=data", *QUICK, "--results=ssr.json"],
                   cwd=work, env=case_env(), check=True, capture_output=True)
    text = open(os.path.join(work, "ssr.json")).read()
    with open(os.path.join(work, "truncated.json"), "w") as handle:
        handle.write(text[:len(text) // 2])


def edited_inter(transform):
    def setup(work):
        folder = write_mmrec(os.path.join(work, "data"))
        path = os.path.join(folder, "tiny.inter")
        with open(path, "rb") as handle:
            data = handle.read()
        with open(path, "wb") as handle:
            handle.write(transform(data))
    return setup


def latin1_on_line_2(data):
    """A Latin-1 'é' at the end of the first data line (line 2)."""
    end = data.index(b"\n", data.index(b"\n") + 1)
    return data[:end] + b"\xe9" + data[end:]


def typed_header(data):
    lines = data.split(b"\n")
    return b"\n".join([b"user_id:token\titem_id:token\tx_label:float"] + lines[1:])


def empty_feature(work):
    folder = write_mmrec(os.path.join(work, "data"))
    np.save(os.path.join(folder, "image_feat.npy"), np.zeros((30, 0), dtype=np.float32))


def inter_is_a_folder(work):
    folder = write_mmrec(os.path.join(work, "data"))
    os.remove(os.path.join(folder, "tiny.inter"))
    os.mkdir(os.path.join(folder, "tiny.inter"))


def edited_prepare(work):
    prepared_twice(work)
    with open(os.path.join(work, "out", "first.inter"), "a") as handle:
        handle.write("my note\n")
    return open(os.path.join(work, "out", "first.inter"), "rb").read()


#: a full disk at the moment the results are written (a file-size limit would stop the bigger checkpoint first)
DISK_FULL_AT_RESULTS = (
    "import errno, json, sys\n"
    "real = json.dump\n"
    "def dump(payload, handle, *args, **kwargs):\n"
    "    if '.r.json.' in getattr(handle, 'name', ''):\n"
    "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
    "    return real(payload, handle, *args, **kwargs)\n"
    "json.dump = dump\n"
    "from recbole_ssr.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def rescued_results(work, _):
    found = glob.glob(os.path.join(work, "tmp", "recbole-ssr-rescued-*r.json"))
    return bool(found) and json.load(open(found[0]))["model"] == "VBPR" and not os.path.exists(os.path.join(work, "r.json"))


def issue_20_cases():
    listing = []
    add = listing.append
    no_training = lambda work, _: not glob.glob(os.path.join(work, "saved", "*.pth"))  # noqa: E731
    # 1. data lost: a run only replaces a file it wrote for the same kind of output
    add(Case("--results= the dataset's own .inter", "1 data lost", runner("--results=data/tiny/tiny.inter"),
             pattern=r"--results=data/tiny/tiny.inter: a results file name ends in .json", setup=with_data(),
             check=lambda work, _: open(os.path.join(work, "data", "tiny", "tiny.inter")).readline().startswith("userID")))
    add(Case("--results= a notes file (not results)", "1 data lost", runner("--results=notes.json"),
             pattern=r"notes.json already exists and holds a file recbole-ssr did not write.*--overwrite",
             setup=with_file("notes.json", "my notes\n"), check=unchanged("notes.json")))
    add(Case("--results= another model's results", "1 data lost", runner("--results=ssr.json"),
             pattern=r"ssr.json already exists and holds the run results of SSR on tiny; this run of VBPR",
             setup=with_file("ssr.json", stamped_results("run", "SSR")), check=unchanged("ssr.json")))
    add(Case("--results= a search's results (another kind)", "1 data lost", runner("--results=best.json"),
             pattern=r"best.json already exists and holds the search results of VBPR on tiny; this run of VBPR",
             setup=with_file("best.json", stamped_results("search", "VBPR")), check=unchanged("best.json")))
    add(Case("side-by-side --results not .json (both modes agree)", "1 data lost", batch(results="notes.txt"),
             pattern=r"--results=notes.txt: a results file name ends in .json", setup=with_file("notes.txt", "mine"),
             check=lambda work, before: unchanged("notes.txt")(work, before)
             and not os.path.exists(os.path.join(work, "notes.json"))))
    add(Case("side-by-side re-run reuses finished runs, log only appended", "1 data lost", batch(seeds=3),
             expect="ok", setup=finished_batch(), pattern=r"^\[side-by-side\] 2 of 3 run\(s\) reused",
             check=lambda work, before: open(os.path.join(work, "b.runs.jsonl"), "rb").read().startswith(before)
             and len(log_lines(work)) == 3))
    add(Case("side-by-side log with a torn last line", "1 data lost", batch(seeds=3), expect="ok",
             setup=finished_batch(seeds=2, torn=True),
             pattern=r"warning: b.runs.jsonl line 3 is not a complete JSON record",
             check=lambda work, before: open(os.path.join(work, "b.runs.jsonl"), "rb").read().startswith(before)
             and len(log_lines(work)) == 4 and len(json.load(open(os.path.join(work, "b.json")))["runs"]) == 3))
    add(Case("two batches on the same --results at once", "1 data lost", None, run=two_batches_at_once,
             pattern=r"--results b.json is in use by process \d+",
             check=lambda work, _: len(log_lines(work)) == 2 and len(json.load(open(os.path.join(work, "b.json")))
                                                                     ["runs"]) == 2))
    add(Case("prepare re-run after the user edited its output", "1 data lost",
             PREPARE + ["--interactions", "raw.csv", "--output", "out", "--name", "first", "--kcore", "0", "--quiet"],
             pattern=r"first.inter changed since prepare wrote it.*--overwrite", setup=edited_prepare,
             check=lambda work, before: open(os.path.join(work, "out", "first.inter"), "rb").read() == before))
    add(Case("disk full when the results are written", "1 data lost",
             [sys.executable, "-c", DISK_FULL_AT_RESULTS] + runner("--results=r.json")[2:],
             pattern=r"writing --results r.json failed \(No space left on device\); the finished results are kept in "
                     r".*recbole-ssr-rescued-.*r.json\. Test: recall@10=",
             setup=lambda work: (with_data()(work), os.makedirs(os.path.join(work, "tmp"))), check=rescued_results,
             env={"TMPDIR": "tmp"}))
    # 2. wrong results that exit 0
    for name, command, pattern in (
            ("--seeds=0", batch(seeds=0), r"--seeds=0: expected a whole number >= 1"),
            ("--seeds=-1", batch(seeds=-1), r"--seeds=-1: expected a whole number >= 1"),
            ("--model=BPR,BPR", batch(models="BPR,BPR", seeds=1), r"names BPR more than once"),
            ("--dataset= (empty)", RUNNER + ["--model=BPR", "--dataset=", "--data_path=data", *QUICK],
             r"--dataset is empty"),
            ("--results= (empty)", runner("--results="), r"--results is empty")):
        add(Case(name, "2 wrong results that exit 0", command, pattern=pattern, setup=with_data(), check=no_training))
    add(Case("typed header with an x_label column", "2 wrong results that exit 0", runner(),
             pattern=r"header is RecBole-typed .*x_label:float.* would be ignored", setup=edited_inter(typed_header)))
    add(Case("feature file of shape [N, 0]", "2 wrong results that exit 0", runner(),
             pattern=r"image_feat.npy: has shape \(30, 0\), i.e. no feature columns", setup=empty_feature))
    # 3. settings checked too late or not at all
    for name, extra, pattern, model in (
            ("--cheb_order=0", ["--cheb_order=0"], r"cheb_order=0 .*out of range: expected a whole number >= 1", "SSR"),
            ("--mask_rate=1", ["--mask_rate=1"], r"mask_rate=1 .*out of range: expected a number >= 0.0 and < 1.0",
             "SSR"),
            ("--lr_decay=[0.9]", ["--lr_decay=[0.9]"], r"lr_decay=\[0.9\] .*\[decay, step\] with both > 0", "VBPR"),
            ("--lr_decay=[-1,0]", ["--lr_decay=[-1,0]"], r"lr_decay=\[-1, 0\] .*\[decay, step\] with both > 0",
             "VBPR"),
            ("--tune with --grace_period=0", ["--tune=properties/search/VBPR.yaml", "--grace_period=0"],
             r"--grace_period=0: search setting 'grace_period: 0' is invalid", "VBPR"),
            ("--tune with --reduction_factor=1", ["--tune=properties/search/VBPR.yaml", "--reduction_factor=1"],
             r"--reduction_factor=1.0: search setting 'reduction_factor: 1.0' is invalid", "VBPR")):
        add(Case(name, "3 settings checked late", runner(*extra, model=model), pattern=pattern, setup=with_data(),
                 check=no_training))
    add(Case("search-space value out of range", "3 settings checked late",
             runner("--tune=space.yaml", "--num_samples=1", model="SSR"),
             pattern=r"mask_rate=1.0 \(from search space .*space.yaml, 'mask_rate: \{uniform: \[0.5, 1.0\]\}'\) is out "
                     r"of range", setup=with_file("space.yaml", "mask_rate: {uniform: [0.5, 1.0]}\n"),
             check=lambda work, _: not os.path.exists(os.path.join(work, "tune_results"))))
    add(Case("duplicate key in a yaml", "3 settings checked late", runner("--config_files=c.yaml"),
             pattern=r"key 'epochs' is set twice \(lines 1 and 3\)",
             setup=with_file("c.yaml", "epochs: 1\nlearning_rate: 0.01\nepochs: 2\n")))
    add(Case("embedding_size: 1.6e1 in a yaml (a whole number)", "3 settings checked late",
             runner("--config_files=c.yaml"), expect="ok", setup=with_file("c.yaml", "embedding_size: 1.6e1\n")))
    # 4. tracebacks and unclear messages
    add(Case("non-UTF-8 byte in the .inter", "4 traceback", runner(),
             pattern=r"tiny.inter: line 2, column \d+ holds the byte b'\\xe9', which is not UTF-8",
             setup=edited_inter(latin1_on_line_2)))
    add(Case("item id far beyond the feature rows", "4 traceback", runner(),
             pattern=r"itemID 99999999999, but the feature files have 30 rows",
             setup=edited_inter(lambda data: data + b"3\t99999999999\t0\n")))
    add(Case("training loss becomes NaN", "4 traceback", runner("--learning_rate=1e30", "--epochs=3",
                                                                 "--train_batch_size=16"),
             pattern=r"VBPR: the training loss became NaN in epoch \d+.*lower learning_rate \(now 1e\+30\) or its "
                     r"loss weights \(reg_weight=", setup=with_data()))
    add(Case("--seeds=abc (argparse)", "4 traceback", runner("--seeds=abc"),
             pattern=r"^error: argument --seeds: invalid int value: 'abc'", setup=with_data()))
    add(Case("--analysis=nosuch (argparse)", "4 traceback", runner("--analysis=nosuch"),
             pattern=r"^error: argument --analysis: invalid choice: 'nosuch'", setup=with_data()))
    add(Case("config file that is a folder", "4 traceback", runner("--config_files=data"),
             pattern=r"config file 'data' \(from --config_files\) is a folder", setup=with_data()))
    add(Case(".inter that is a folder", "4 traceback", runner(), pattern=r"tiny.inter is a folder",
             setup=inter_is_a_folder))
    add(Case("--analysis_from with no finished run", "4 traceback",
             runner("--analysis=groups", "--analysis_from=failed.runs.jsonl"),
             pattern=r"--analysis_from: failed.runs.jsonl hold no finished run",
             setup=with_file("failed.runs.jsonl", '{"model": "VBPR", "dataset": "tiny", "seed": 1, "status": "failed", '
                                                  '"error": "x"}\n')))
    add(Case("Ctrl-C of a side-by-side batch", "4 traceback", None, expect="interrupted", run=interrupted_batch,
             check=lambda work, _: len(log_lines(work)) >= 1 and not os.path.exists(os.path.join(work, "b.lock"))))
    add(Case("band-scale tool: truncated results JSON", "4 traceback", BAND_SCALE + ["truncated.json"],
             pattern=r"truncated.json: not a complete JSON file", setup=ssr_results))
    add(Case("band-scale tool: foreign JSON", "4 traceback", BAND_SCALE + ["notes.json"],
             pattern=r"notes.json: not the --results JSON of one run", setup=with_file("notes.json", [1, 2])))
    add(Case("band-scale tool: checkpoint of another dataset version", "4 traceback", BAND_SCALE + ["ssr.json"],
             pattern=r"trained on another version of dataset 'tiny'", setup=stale_checkpoint))
    # 5. progress
    add(Case("a slow run shows progress", "5 misleading message",
             runner("--train_batch_size=1", "--progress_interval=0.05", "--state=INFO"), expect="ok",
             pattern=r"epoch 0: batch \d+ of \d+ \(\d+%\) after", setup=with_data()))
    return listing


def case_env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), HF_HUB_OFFLINE="1",
                PYTHONDONTWRITEBYTECODE="1")


# ------------------------------------------------------------------------------------------------ running
def judge(case, code, err, check_ok, out=""):
    lines = [line for line in err.splitlines() if line.strip()]
    noisy = any("Traceback" in line or "Warning" in line for line in lines)
    if case.expect == "ok":  # the pattern: what the command says on stdout or stderr
        return (code == 0 and not noisy and check_ok
                and (case.pattern is None or re.search(case.pattern, out + "\n" + err, re.MULTILINE) is not None))
    if case.expect == "killed":
        return code == -signal.SIGKILL and check_ok
    if case.expect == "interrupted":
        return code == 130 and not noisy and check_ok
    last = lines[-1] if lines else ""
    return (code not in (0, None) and not noisy and last.startswith("error: ") and check_ok
            and (case.pattern is None or re.search(case.pattern, last) is not None))


def run_case(case, keep=False):
    work = tempfile.mkdtemp(prefix="fault-")
    env = case_env()
    env.update({k: os.path.join(work, v) for k, v in (case.env or {}).items()})
    try:
        before = case.setup(work) if case.setup else None
        out = ""
        if case.run:
            code, err = case.run(work, env)
        else:
            def limit():
                if case.limit_file_size:
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal, as a full disk
                    resource.setrlimit(resource.RLIMIT_FSIZE, (case.limit_file_size, case.limit_file_size))
            done = subprocess.run(case.command, cwd=work, env=env, capture_output=True, text=True, timeout=600,
                                  preexec_fn=limit)
            code, err, out = done.returncode, done.stderr, done.stdout
        try:
            check_ok = case.check(work, before) if case.check else True
        except Exception as exc:  # noqa: BLE001 - a failed check is a finding, not a crash of the catalogue
            check_ok, err = False, err + f"\n[check failed: {type(exc).__name__}: {exc}]"
        return code, err, out, check_ok
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the embedded ml-100k build case")
    parser.add_argument("--repo", default=None, help="checkout whose run_recbole_ssr.py and recbole_ssr to test "
                                                      "(default: this one)")
    args = parser.parse_args(argv)
    if args.repo:
        global REPO
        REPO = os.path.abspath(args.repo)
        RUNNER[1] = os.path.join(REPO, "run_recbole_ssr.py")
    selected = [c for c in cases() if (not args.only or args.only in c.name)
                and not (args.skip_slow and "ml-100k" in c.name)]
    print("| # | case | class | expected | exit | clean | last stderr line |")
    print("|---|---|---|---|---|---|---|")
    clean_count = 0
    for number, case in enumerate(selected, 1):
        started = time.time()
        code, err, out, check_ok = run_case(case)
        clean = judge(case, code, err, check_ok, out)
        clean_count += clean
        lines = [line for line in err.splitlines() if line.strip()]
        last = (lines[-1] if lines else "").replace("|", "\\|")
        last = last if len(last) <= 140 else last[:137] + "..."
        print(f"| {number} | {case.name} | {case.fault_class} | {case.expect} | {code} | {'yes' if clean else 'NO'} "
              f"| {last} |", flush=True)
        print(f"[{case.name}: {time.time() - started:.1f} s]", file=sys.stderr, flush=True)
    print(f"\n{clean_count} of {len(selected)} cases clean.")
    return 0 if clean_count == len(selected) else 1


if __name__ == "__main__":
    sys.exit(main())
