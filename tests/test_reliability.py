"""Issues 14 and 20: no lost data or finished training, every setting checked before training. One test per class of fault
(docs/errors.md lists them); scripts/fault_catalogue.py runs the same classes, and more cases, against the CLI."""

import errno
import json
import os
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import QUICK, planted_features
from recbole_ssr import cli
from recbole_ssr.config.values import parse_value
from recbole_ssr.core.errors import ConfigError, DataError
from recbole_ssr.data.prepare import PrepareError, prepare_dataset
from recbole_ssr.core.safe_io import atomic_write


def folder_bytes(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def raw_interactions(path, n_users=12, n_items=9, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{i}") for u in range(n_users) for i in rng.choice(n_items, size=5, replace=False)]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(path, index=False)
    return path


def run_cli(capfd, *argv):
    """``run_recbole_ssr.py ARGV`` in this process: (exit status, stderr)."""
    status = cli.main(list(argv))
    return status, capfd.readouterr().err


def tiny_args(root, name, *extra):
    quick = [f"--{k}={v}" for k, v in QUICK.items()]
    return ["--model=VBPR", f"--dataset={name}", f"--data_path={root}", *quick, *extra]


@pytest.fixture
def never_train(monkeypatch):
    """Fail the test if training starts: the faults below must be found before it."""
    from recbole_ssr.training.trainer import MultimodalTrainer

    def refuse(*args, **kwargs):
        raise AssertionError("training started although the problem was knowable before it")

    monkeypatch.setattr(MultimodalTrainer, "fit", refuse)


# ---------------------------------------------------------------------------------------------- 1. data lost
def test_data_is_never_lost(tmp_path, monkeypatch):
    log = lambda message: None  # noqa: E731
    raw = raw_interactions(tmp_path / "raw.csv")

    # a folder prepare did not write is refused and left exactly as it was
    foreign = tmp_path / "copy_of_tiktok"
    foreign.mkdir()
    (foreign / "tiktok.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n")
    np.save(foreign / "image_feat.npy", np.ones((2, 3), dtype=np.float32))
    before = folder_bytes(foreign)
    with pytest.raises(PrepareError, match="did not write.*left untouched"):
        prepare_dataset(raw, foreign, "tiktok", kcore=0, log=log)
    assert folder_bytes(foreign) == before

    # a folder prepare wrote is replaced as a whole; a write that fails (disk full) leaves it as it was
    ours = tmp_path / "ours"
    prepare_dataset(raw, ours, "a", kcore=0, log=log)
    first = folder_bytes(ours)
    real_write = pd.DataFrame.to_csv

    def disk_full(self, *args, **kwargs):
        if {"user_id", "userID"} <= set(self.columns):  # the second file prepare writes
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(PrepareError, match="No space left on device.*left as it was"):
        prepare_dataset(raw, ours, "b", kcore=0, log=log)
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_write)
    assert folder_bytes(ours) == first
    assert sorted(os.listdir(tmp_path)) == ["copy_of_tiktok", "ours", "raw.csv"]  # no staging folder left
    prepare_dataset(raw, ours, "b", kcore=0, log=log)
    assert "b.inter" in os.listdir(ours) and "a.inter" not in os.listdir(ours)

    # an interrupted write never replaces a file a user relies on
    target = tmp_path / "best.pth"
    target.write_bytes(b"old checkpoint")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, "wb") as handle:
            handle.write(b"half a checkp")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old checkpoint" and os.listdir(tmp_path).count("best.pth") == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_checkpoints_survive_a_failed_save(make_mmrec, monkeypatch):
    """The trainer's best checkpoint is written atomically: a save that dies leaves the previous one loadable."""
    from recbole_ssr.experiments.run import run
    from recbole_ssr.training.trainer import load_own_checkpoint

    root, name, _ = make_mmrec()
    real_save, seen = torch.save, {}

    def dies_on_second_save(obj, handle, *args, **kwargs):
        seen["calls"] = seen.get("calls", 0) + 1
        if seen["calls"] == 2:
            handle.write(b"torn")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_on_second_save)
    trainers = []
    with pytest.raises(OSError):
        run("VBPR", name, config_dict=dict(QUICK, data_path=root, epochs=2, eval_step=0),
            on_ready=lambda model, trainer, data: trainers.append(trainer))
    checkpoint = load_own_checkpoint(trainers[0].saved_model_file, "cpu")
    assert checkpoint["epoch"] == 0
    assert os.listdir(os.path.dirname(trainers[0].saved_model_file)) == [os.path.basename(trainers[0].saved_model_file)]


# ------------------------------------------------------------------------------ 2. a finished training thrown away
@pytest.mark.parametrize("case, argument, message", [
    ("results is a folder", "--results={tmp}", "--results .* is a folder"),
    ("results under a file", "--results={tmp}/blocker/out.json", "--results .*: its folder .* is a file"),
    ("checkpoint_dir unwritable", "--checkpoint_dir={tmp}/blocker/ckpt", "checkpoint_dir .* cannot be written"),
    ("cache_dir unwritable", "--cache_dir={tmp}/blocker/cache", "cache_dir .* cannot be written"),
    ("log folder unwritable", "--epochs=1", "RecBole's log folder .*/log is a file.*working directory"),
    ("unknown valid_metric", "--valid_metric=foo@20", "valid_metric 'foo@20'"),
    ("valid_metric cut-off not computed", "--valid_metric=Recall@50", "cut-off @50 is not in topk"),
])
def test_problems_are_found_before_training(make_mmrec, tmp_path, capfd, never_train, case, argument, message):
    root, name, _ = make_mmrec()
    (tmp_path / "blocker").write_text("a file where a folder would have to be")
    if case == "log folder unwritable":
        (tmp_path / "log").write_text("not a folder")
    status, err = run_cli(capfd, *tiny_args(root, name, argument.format(tmp=tmp_path)))
    assert status == 2 and err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


# ----------------------------------------------------------------------------------------- 3. settings silently wrong
@pytest.mark.parametrize("argument, message", [
    ("--learning_rat=0.01", "unknown configuration key 'learning_rat' \\(from the command line\\); did you mean "
                            "'learning_rate'"),
    ("yaml:learning_rat: 0.01", "unknown configuration key 'learning_rat' \\(from .*extra.yaml\\); did you mean "
                                "'learning_rate'"),
    ("--epochs=-1", "epochs=-1 .* out of range: expected a whole number >= 1"),
    ("--embedding_size=0", "embedding_size=0 .* out of range"),
    ("--train_batch_size=0", "train_batch_size=0 .* out of range"),
    ("--stopping_step=1.5", "stopping_step=1.5 .*expected a whole number"),
    ("--early_stop_strict=3", "early_stop_strict=3 .*expected True or False"),
])
def test_settings_that_would_be_silently_wrong_are_refused(make_mmrec, tmp_path, capfd, never_train, argument,
                                                           message):
    root, name, _ = make_mmrec()
    if argument.startswith("yaml:"):
        (tmp_path / "extra.yaml").write_text(argument[5:] + "\n")
        argument = f"--config_files={tmp_path / 'extra.yaml'}"
    status, err = run_cli(capfd, *tiny_args(root, name, argument))
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


def test_deliberate_extra_keys_are_declared(make_mmrec):
    from recbole_ssr.config.configurator import Config

    root, name, _ = make_mmrec()
    with pytest.raises(ConfigError, match="unknown configuration key 'my_switch'.*extra_keys: \\[my_switch\\]"):
        Config("VBPR", name, config_dict={"data_path": root, "my_switch": 1})
    config = Config("VBPR", name, config_dict={"data_path": root, "my_switch": 1, "extra_keys": ["my_switch"]})
    assert config["my_switch"] == 1


@pytest.mark.parametrize("short_modality", ["image", "text"])
def test_modalities_must_agree_in_any_order(make_mmrec, short_modality):
    from recbole_ssr.training.build import prepare

    root, name, _ = make_mmrec()
    np.save(f"{root}/{name}/{short_modality}_feat.npy", planted_features(29, 4))  # one row short (others: 30)
    with pytest.raises(DataError, match="disagree on the number of items: image_feat.npy \\(image\\): \\d+ rows; "
                                        "text_feat.npy \\(text\\): \\d+ rows"):
        prepare("VBPR", name, config_dict=dict(QUICK, data_path=root))


# --------------------------------------------------------------------------------- 4. tracebacks where a sentence belongs
@pytest.mark.parametrize("case", ["empty inter", "malformed yaml", "yaml is a list", "learning_rate=abc", "epochs=abc",
                                  "seed=abc", "learning_rate=-1", "band_num=0", "metrics=[Foo]", "cache_dir under a file"])
def test_bad_input_is_one_error_line(make_mmrec, tmp_path, capfd, never_train, case):
    root, name, _ = make_mmrec()
    extra = []
    if case == "empty inter":
        open(f"{root}/{name}/{name}.inter", "w").close()
    elif case in ("malformed yaml", "yaml is a list"):
        (tmp_path / "c.yaml").write_text("epochs: [1\n" if case == "malformed yaml" else "- epochs: 1\n")
        extra = [f"--config_files={tmp_path / 'c.yaml'}"]
    elif case == "cache_dir under a file":
        (tmp_path / "f").write_text("x")
        extra = [f"--cache_dir={tmp_path / 'f'}"]
    else:
        extra = [f"--{case}"] + (["--model=SSR"] if case == "band_num=0" else [])  # an SSR key: SSR's range
    status, err = run_cli(capfd, *tiny_args(root, name, *extra))
    assert status == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def test_cache_dir_none_trains_without_a_cache(make_mmrec, tmp_path, capfd):
    root, name, _ = make_mmrec()
    status, err = run_cli(capfd, *tiny_args(root, name, "--cache_dir=~", f"--results={tmp_path / 'r.json'}"))
    assert status == 0, err
    assert (tmp_path / "r.json").is_file() and not os.path.exists(os.path.join(root, ".cache"))


# ------------------------------------------------------------------------------------------- 5. messages that mislead
def test_messages_say_what_is_meant(make_mmrec, tmp_path):
    from recbole_ssr.core import compat
    from recbole_ssr.config.configurator import Config
    from recbole_ssr.data.default import build_default_dataset

    assert parse_value("[image]") == ["image"] and parse_value("{image: 0.1}") == {"image": 0.1}
    assert parse_value("['image', 'text']") == ["image", "text"] and parse_value("[]") == []
    root, name, _ = make_mmrec()
    assert Config("VBPR", name, config_dict={"data_path": root, "use_modalities": ["image"]})["use_modalities"] == ["image"]
    with pytest.raises(ConfigError, match="use_modalities=\\[\\] selects 0 modalities, but VBPR needs at least 1"):
        Config("VBPR", name, config_dict={"data_path": root, "use_modalities": []})

    # a second first run of the embedded dataset uses the build another run finished meanwhile
    folder = tmp_path / "embedded" / "ml-100k"

    def other_run_finishes_first(texts):
        folder.mkdir(parents=True)
        (folder / "DONE").write_text("")
        (folder / "from_the_other_run").write_text("")
        return np.zeros((len(texts), 4), dtype=np.float32)

    assert build_default_dataset(str(folder), text_encoder=other_run_finishes_first) == str(folder)
    assert (folder / "from_the_other_run").exists() and len(os.listdir(folder.parent)) == 1

    # RecBole's FutureWarnings are hidden; ours and other libraries' are not
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compat._silence_recbole_future_warnings()
        warnings.warn_explicit("noise", FutureWarning, "dataset.py", 1, module="recbole.data.dataset.dataset")
        warnings.warn_explicit("ours", FutureWarning, "x.py", 1, module="recbole_ssr.x")
    assert [str(w.message) for w in seen] == ["ours"]


# ------------------------------------------------------------------------ 6. gaps a hostile test found (issue 20)
@pytest.mark.parametrize("arguments, message", [
    (["--seeds=abc"], r"^error: argument --seeds: invalid int value: 'abc' \(run with --help"),
    (["--analysis=nosuch"], r"^error: argument --analysis: invalid choice: 'nosuch'"),
    (["--model=BPR,BPR"], r"--model=BPR,BPR names BPR more than once"),
    (["--model=BPR,"], r"--model=BPR, has an empty name between commas"),
    (["--dataset="], r"--dataset is empty"),
    (["--model=SSR", "--cheb_order=0"], r"cheb_order=0 \(from the command line\) is out of range: expected a whole "
                                        r"number >= 1"),
    (["--model=SSR", "--mask_rate=1"], r"mask_rate=1 .* out of range: expected a number >= 0.0 and < 1.0"),
    (["--lr_decay=[0.9]"], r"lr_decay=\[0.9\] .*expected ~ .* or \[decay, step\] with both > 0"),
    (["--lr_decay=[-1, 0]"], r"lr_decay=\[-1, 0\] .*expected ~"),
    (["--tune=space.yaml", "--grace_period=0"], r"--grace_period=0: search setting 'grace_period: 0' is invalid"),
    (["--tune=space.yaml", "--reduction_factor=1"], r"--reduction_factor=1.0: search setting 'reduction_factor: "
                                                    r"1.0' is invalid; expected .* \(number > 1\)"),
    (["--model=MGCN", "--knn_k={image: 0}"], r"knn_k.image=0 .* out of range"),
    (["yaml:epochs: 1\nlearning_rate: 0.01\nepochs: 2\n"], r"key 'epochs' is set twice \(lines 1 and 3\)"),
    (["folder-config"], r"config file .* is a folder, but a yaml file is expected"),
    (["--tune=space-out-of-range.yaml"], r"learning_rate=-0.1 \(from search space .*space-out-of-range.yaml, "
                                         r"'learning_rate: \{choice: \[0.1, -0.1\]\}'\) is out of range"),
    (["--model=SSR", "--tune=space-ssr.yaml"], r"mask_rate=1.0 \(from search space .*space-ssr.yaml.* expected a "
                                               r"number >= 0.0 and < 1.0"),
])
def test_settings_are_checked_before_anything_runs(make_mmrec, tmp_path, capfd, never_train, arguments, message):
    root, name, _ = make_mmrec()
    (tmp_path / "space.yaml").write_text("learning_rate: {choice: [0.001, 0.01]}\n")
    (tmp_path / "space-out-of-range.yaml").write_text("learning_rate: {choice: [0.1, -0.1]}\n")
    (tmp_path / "space-ssr.yaml").write_text("mask_rate: {uniform: [0.5, 1.0]}\n")
    (tmp_path / "folder-config").mkdir()
    if arguments[0].startswith("yaml:"):
        (tmp_path / "dup.yaml").write_text(arguments[0][5:])
        arguments = [f"--config_files={tmp_path / 'dup.yaml'}"]
    elif arguments[0] == "folder-config":
        arguments = [f"--config_files={tmp_path / 'folder-config'}"]
    arguments = [a.replace("space", str(tmp_path / "space"), 1) if a.startswith("--tune=") else a for a in arguments]
    status, err = run_cli(capfd, *tiny_args(root, name, *arguments))
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_a_whole_number_written_as_a_float_is_taken_as_one(make_mmrec, tmp_path):
    from recbole_ssr.config.configurator import Config

    root, name, _ = make_mmrec()
    (tmp_path / "e.yaml").write_text("epochs: 1e3\nstopping_step: 2.0\n")  # yaml reads 1e3 as 1000.0
    config = Config("VBPR", name, config_file_list=[str(tmp_path / "e.yaml")], config_dict={"data_path": root})
    assert config["epochs"] == 1000 and isinstance(config["epochs"], int) and config["stopping_step"] == 2
    with pytest.raises(ConfigError, match=r"epochs=1.5 \(from the command line\): expected a whole number"):
        Config("VBPR", name, config_dict={"data_path": root, "epochs": 1.5})


def test_model_ranges_live_with_the_model():
    """Every plugin model declares the ranges of its own keys; each is a key the model reads (a known key), and
    each shipped default lies within its range."""
    import yaml

    from recbole_ssr.core.paths import properties_dir
    from recbole_ssr.model.registry import get_model, plugin_model_names
    from recbole_ssr.config.validation import RANGES, check_range, known_keys, ranges_for

    assert "band_num" not in RANGES and "mask_rate" not in RANGES  # SSR's keys are SSR's
    assert ranges_for(get_model("SSR"))["mask_rate"] == ("float", 0.0, 1.0, "[)")
    assert "mask_rate" not in ranges_for(get_model("VBPR"))
    for model in plugin_model_names():
        ranges = ranges_for(get_model(model))
        with open(os.path.join(properties_dir(), "model", f"{model}.yaml"), encoding="utf-8") as handle:
            defaults = yaml.safe_load(handle) or {}
        for key, spec in ranges.items():
            assert key in known_keys(), (model, key)
            if key in defaults and not isinstance(defaults[key], dict):
                check_range(key, defaults[key], f"properties/model/{model}.yaml", spec)


@pytest.mark.parametrize("case, message", [
    ("latin-1 byte", r"tiny.inter: line 4, column 3 holds the byte b'\\xe9', which is not UTF-8; interaction files "
                     r"must be UTF-8"),
    ("latin-1 byte, atomic", r"atom.inter: line 3, column 2 holds the byte b'\\xe9', which is not UTF-8"),
    ("item id far beyond the features", r"data row 241 has itemID 99999999999, but the feature files have 30 rows"),
    ("item id far beyond, no features", r"the largest itemID is 99999999999 for \d+ distinct items"),
    ("typed header with x_label", r"the header is RecBole-typed .*x_label:float.* would be ignored"),
    ("feature file [N, 0]", r"image_feat.npy: has shape \(30, 0\), i.e. no feature columns"),
    (".inter is a folder", r"tiny.inter is a folder, but the interaction file is expected there"),
])
def test_data_faults_are_one_line(make_mmrec, make_atomic, tmp_path, capfd, never_train, case, message):
    root, name, frame = make_mmrec()
    folder = f"{root}/{name}"
    inter = f"{folder}/{name}.inter"
    model = "VBPR"
    extra = []
    if case == "latin-1 byte":
        with open(inter, "r+b") as handle:
            lines = handle.read().split(b"\n")
            lines[3] = lines[3][:2] + b"\xe9" + lines[3][3:]
            handle.seek(0)
            handle.truncate()
            handle.write(b"\n".join(lines))
    elif case == "latin-1 byte, atomic":
        config, name, _ = make_atomic()
        path = tmp_path / "atomic" / name / f"{name}.inter"
        lines = path.read_bytes().split(b"\n")
        lines[2] = lines[2][:1] + b"\xe9" + lines[2][1:]
        path.write_bytes(b"\n".join(lines))
        root, model = config["data_path"], "BPR"
        extra = ["--benchmark_filename=~"]
    elif case.startswith("item id far beyond"):
        with open(inter, "a") as handle:
            handle.write("3\t99999999999\t0\n")
        if case.endswith("no features"):
            for modality in ("image", "text"):
                os.remove(f"{folder}/{modality}_feat.npy")
            model = "BPR"
    elif case == "typed header with x_label":
        typed = frame[["userID", "itemID", "x_label"]].copy()
        typed.columns = ["user_id:token", "item_id:token", "x_label:float"]
        typed.to_csv(inter, sep="\t", index=False)
    elif case == "feature file [N, 0]":
        np.save(f"{folder}/image_feat.npy", np.zeros((30, 0), dtype=np.float32))
    elif case == ".inter is a folder":
        os.remove(inter)
        os.mkdir(inter)
    args = tiny_args(root, name, *extra)
    args[0] = f"--model={model}"
    status, err = run_cli(capfd, *args)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_a_loss_that_becomes_nan_names_the_model_and_what_to_lower(make_mmrec, capfd):
    root, name, _ = make_mmrec()
    status, err = run_cli(capfd, *tiny_args(root, name, "--model=SSR", "--learning_rate=1e30", "--epochs=3",
                                            "--train_batch_size=16"))
    assert status == 2 and err.count("\n") == 1, err
    assert re.search(r"^error: SSR: the training loss became NaN in epoch 0, so training stopped; lower learning_rate "
                     r"\(now 1e\+30\) or its loss weights \(reg_weight=0.1, mask_weight=0.001, cl_weight=0.0001\)", err)


def test_a_slow_epoch_shows_progress(make_mmrec, caplog):
    import logging

    from recbole_ssr.experiments.run import run

    root, name, _ = make_mmrec()
    caplog.set_level(logging.INFO)
    run("VBPR", name, config_dict=dict(QUICK, data_path=root, state="INFO", train_batch_size=1,
                                       progress_interval=1e-6), saved=False)
    lines = [r.getMessage() for r in caplog.records if "epoch 0: batch" in r.getMessage()]
    assert lines and re.search(r"epoch 0: batch \d+ of \d+ \(\d+%\) after .*, about .* left in this epoch", lines[0])
    caplog.clear()
    run("VBPR", name, config_dict=dict(QUICK, data_path=root, state="INFO", train_batch_size=1,
                                       progress_interval=0), saved=False)
    assert not [r for r in caplog.records if "epoch 0: batch" in r.getMessage()]


def test_analysis_from_runs_that_all_failed_is_one_line(tmp_path, capfd, never_train):
    runs = tmp_path / "failed.runs.jsonl"
    runs.write_text(json.dumps({"model": "BPR", "dataset": "tiny", "seed": 1, "status": "failed", "error": "x"}) + "\n")
    status, err = run_cli(capfd, "--analysis=groups", f"--analysis_from={runs}")
    assert status == 2 and err.count("\n") == 1
    assert re.search(r"--analysis_from: .*failed.runs.jsonl hold no finished run \(1 run\(s\), none with status ok\)",
                     err), err
    empty = tmp_path / "empty.runs.jsonl"
    empty.write_text("")
    status, err = run_cli(capfd, "--analysis=groups", f"--analysis_from={empty}")
    assert status == 2 and "hold no finished run (0 run(s)" in err
