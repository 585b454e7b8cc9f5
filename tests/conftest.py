"""Shared fixtures: every test runs in its own temporary working directory with tiny generated datasets."""

import contextlib
import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")

# Fast, quiet defaults for tiny runs (any test may override).
QUICK = {"epochs": 1, "state": "ERROR", "show_progress": False, "train_batch_size": 64, "eval_batch_size": 100000}


#: whole modules that start Ray clusters, run searches or build the wheel (`pytest -m "not slow"` leaves them out)
SLOW_MODULES = {"test_ray_cluster", "test_packaging", "test_tuned_benchmark"}


def pytest_collection_modifyitems(items):
    """Mark as ``slow`` the slow modules and every test that starts a local Ray (the ``local_ray`` fixture)."""
    for item in items:
        if item.module.__name__ in SLOW_MODULES or "local_ray" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _temp_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@contextlib.contextmanager
def ctrl_c_when(condition):
    """Send what Ctrl-C sends (Ray Tune handles SIGUSR1 like SIGINT) once ``condition()`` holds, and expect the
    KeyboardInterrupt the interrupted search raises; a late signal is ignored so it cannot end pytest."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if condition():
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGUSR1, previous)


def planted_features(n_rows, dim, dtype=np.float32, seed=0):
    """Features whose first column is the row index, so alignment can be checked exactly."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_rows, dim)).astype(np.float64)
    features[:, 0] = np.arange(n_rows)
    return features.astype(dtype)


def tiny_interactions(n_users=40, n_items=30, per_user=6, seed=0):
    """Per user `per_user` distinct items; x_label: last one test, second last valid (for 2/3 of users), rest train.
    A third of the users get no valid item and every fifth user no test item, as in sparse real data."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        items = rng.choice(n_items - 2, size=per_user, replace=False)  # the last two items never interacted
        labels = [0] * per_user
        if user % 5 != 0:
            labels[-1] = 2
        if user % 3 != 0:
            labels[-2] = 1
        for position, (item, label) in enumerate(zip(items, labels)):
            rows.append((user, int(item), 1.0 + position % 5, 1_000_000 + 100 * user + position, label))
    return pd.DataFrame(rows, columns=["userID", "itemID", "rating", "timestamp", "x_label"])


@pytest.fixture
def make_mmrec(tmp_path):
    """Write an MMRec-layout dataset folder; returns (data_root, name, interactions frame)."""

    def _make(name="tiny", modalities=None, columns=("userID", "itemID", "x_label"), dtype=np.float32,
              n_users=40, n_items=30, seed=0):
        modalities = {"image": 16, "text": 8} if modalities is None else modalities
        root = tmp_path / "data"
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        frame = tiny_interactions(n_users, n_items, seed=seed)
        frame[list(columns)].to_csv(folder / f"{name}.inter", sep="\t", index=False)
        for k, (modality, dim) in enumerate(modalities.items()):
            np.save(folder / f"{modality}_feat.npy", planted_features(n_items, dim, dtype, seed=k + 1))
        return str(root), name, frame

    return _make


@pytest.fixture
def make_atomic(tmp_path):
    """RecBole atomic dataset with string tokens, a fixed split (train/valid/test files) and one feature file
    whose rows are listed in feature_item_ids (optionally leaving some items out)."""

    def _make(name="atom", drop_items=(), dim=6):
        frame = tiny_interactions()
        folder = tmp_path / "atomic" / name
        folder.mkdir(parents=True, exist_ok=True)
        typed = pd.DataFrame({"user_id:token": "u" + frame.userID.astype(str),
                              "item_id:token": "i" + frame.itemID.astype(str)})
        typed.to_csv(folder / f"{name}.inter", sep="\t", index=False)
        for code, phase in enumerate(("train", "valid", "test")):
            typed[frame.x_label.to_numpy() == code].to_csv(folder / f"{name}.{phase}.inter", sep="\t", index=False)
        tokens = [f"i{i}" for i in range(30) if i not in set(drop_items)]
        rng = np.random.default_rng(3)
        order = rng.permutation(len(tokens))  # rows deliberately not in id order
        tokens = [tokens[j] for j in order]
        features = rng.normal(size=(len(tokens), dim)).astype(np.float32)
        features[:, 0] = [int(t[1:]) for t in tokens]
        np.save(folder / "content_feat.npy", features)
        (folder / "ids.txt").write_text("\n".join(tokens) + "\n")
        config = {"data_path": str(tmp_path / "atomic"), "modalities": {"content": "content_feat.npy"},
                  "feature_item_ids": "ids.txt"}
        return config, name, frame

    return _make


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for a test module's searches (module scope: started once per module); run_search uses an already started Ray as it is."""
    import ray

    previous = os.environ.get("RAY_USAGE_STATS_ENABLED")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()
    if previous is None:
        os.environ.pop("RAY_USAGE_STATS_ENABLED", None)
