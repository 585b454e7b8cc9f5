"""Item cold-start split: hold a fraction of the items out of training entirely (config ``cold_item_ratio``).

Applied to the fixed split (``eval_protocol: mmrec``, or ``recbole`` with ``benchmark_filename``), i.e. to the
``<ds>.train/valid/test.inter`` files. Rule:

1. Candidates: the items that have at least one *training* interaction (sorted by token).
   ``n = round(cold_item_ratio · #candidates)`` of them (at least 1) are drawn uniformly with
   ``numpy.random.default_rng(cold_item_seed)``; ``cold_item_seed`` defaults to 2025, independent of ``seed``, so
   every seed of a comparison sees the same split.
2. The drawn items are shuffled with the same generator and halved: the first ``n // 2`` are *valid-cold*, the rest
   *test-cold*. Every training interaction of a valid-cold item moves to the valid file, of a test-cold item to the
   test file (the MMRec protocol keeps a user's history in train and scores valid/test against it, so moved
   interactions simply become extra positives there). Valid and test interactions are never moved.
3. Afterwards no cold item has a training interaction; model selection sees cold items (valid) that the test set
   does not, and vice versa.

The result is written once to ``<cache_dir>/cold_split/<ds>-<digest>/`` (keyed by the source files, the ratio and
the seed; concurrent runs are safe) with the item/user side files copied, plus ``cold_items.json`` (the tokens, per
half, and the moved counts). Features are still read from the dataset folder, and the
:mod:`recbole_ssr.training.evaluation` group metrics report the cold items' own group (``cold_items``).
"""

import json
import os
import shutil
from logging import getLogger

import numpy as np
import pandas as pd

from recbole_ssr.core.cache import content_key, file_signature
from recbole_ssr.core.errors import ConfigError, DataError
from recbole_ssr.core.safe_io import staged_folder, write_json

PHASES = ("train", "valid", "test")
DEFAULT_SEED = 2025
_VERSION = 1


def cold_split_settings(config):
    """(ratio, seed) from the config; ratio 0 = off."""
    ratio = config["cold_item_ratio"] if "cold_item_ratio" in config else None
    ratio = 0.0 if ratio is None else ratio
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        ratio = -1.0
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"cold_item_ratio must be a fraction in [0, 1) (0 = off), got {config['cold_item_ratio']!r}.")
    seed = config["cold_item_seed"] if "cold_item_seed" in config else None
    return ratio, int(DEFAULT_SEED if seed is None else seed)


def _item_column(frame, item_field, path):
    for column in frame.columns:
        if column.split(":")[0] == item_field:
            return column
    raise DataError(f"{path}: no '{item_field}' column (found {', '.join(frame.columns)}); the item cold-start split "
                    "needs the item id column.")


def apply_cold_item_split(data_path, name, item_field, ratio, seed, cache_dir):
    """Write the cold-start version of the fixed split in ``data_path`` and return its folder (see module doc)."""
    sources = [os.path.join(data_path, f"{name}.{phase}.inter") for phase in PHASES]
    key = {"files": [list(file_signature(p).values()) for p in sources], "ratio": ratio, "seed": seed,
           "version": _VERSION}
    digest = content_key(key)
    root = os.path.join(cache_dir or os.path.join(data_path, ".cache"), "cold_split")
    target = os.path.join(root, f"{name}-{digest}")
    if os.path.isfile(os.path.join(target, "cold_items.json")):
        return target

    frames = [pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False) for p in sources]
    column = _item_column(frames[0], item_field, sources[0])
    train = frames[0]
    candidates = np.array(sorted(train[column].unique()))
    n_cold = max(1, int(round(ratio * len(candidates))))
    if n_cold >= len(candidates):
        raise ConfigError(f"cold_item_ratio={ratio} would hold out all {len(candidates)} training items of "
                          f"'{name}'; use a smaller fraction.")
    rng = np.random.default_rng(seed)
    cold = rng.choice(candidates, size=n_cold, replace=False)
    cold = cold[rng.permutation(n_cold)]
    halves = {"valid": set(cold[: n_cold // 2].tolist()), "test": set(cold[n_cold // 2:].tolist())}
    moving = {phase: train[column].isin(items).to_numpy() for phase, items in halves.items()}
    out = {
        "train": train[~(moving["valid"] | moving["test"])],
        "valid": pd.concat([frames[1], train[moving["valid"]]], ignore_index=True),
        "test": pd.concat([frames[2], train[moving["test"]]], ignore_index=True),
    }
    with staged_folder(target, marker="cold_items.json") as staging:
        for phase, frame in out.items():
            frame.to_csv(os.path.join(staging, f"{name}.{phase}.inter"), sep="\t", index=False)
        for suffix in ("item", "user"):
            side = os.path.join(data_path, f"{name}.{suffix}")
            if os.path.isfile(side):
                shutil.copy2(side, os.path.join(staging, f"{name}.{suffix}"))
        report = {"source": os.path.abspath(data_path), "ratio": ratio, "seed": seed,
                  "n_candidates": int(len(candidates)), "valid_cold": sorted(halves["valid"]),
                  "test_cold": sorted(halves["test"]),
                  "moved": {phase: int(mask.sum()) for phase, mask in moving.items()},
                  "interactions": {phase: int(len(frame)) for phase, frame in out.items()}}
        write_json(os.path.join(staging, "cold_items.json"), report, indent=1)
    getLogger().info(f"item cold-start split of '{name}': {n_cold} of {len(candidates)} training items held out "
                     f"({len(halves['valid'])} -> valid, {len(halves['test'])} -> test), "
                     f"{report['moved']} training interactions moved; files in {target}")
    return target


def cold_items_of(folder):
    """The ``cold_items.json`` report of a cold-split folder (None for an ordinary folder)."""
    path = os.path.join(folder, "cold_items.json")
    if not os.path.isfile(path):
        return None
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)
