"""Where a dataset's files are, what layout they use, and the one-time conversion of MMRec folders.

Two layouts are read as they are:

* **MMRec** (``<ds>.inter`` with a plain header ``userID itemID [rating] [timestamp] x_label``, 0-based ids,
  ``x_label`` 0/1/2 = train/valid/test, feature ``.npy`` files whose row i is itemID i);
* **RecBole atomic** (``<ds>.inter`` with typed headers such as ``user_id:token``, optionally
  ``<ds>.train.inter`` / ``.valid.inter`` / ``.test.inter`` for a fixed split, plus feature files declared in the
  dataset yaml).

An MMRec ``.inter`` is converted once into RecBole atomic files under ``cache_dir`` (keyed by the source file's
path, size and modification time, so an edited source is re-converted): ``<ds>.inter`` with every interaction
(for ``eval_protocol: recbole``), ``<ds>.train|valid|test.inter`` holding exactly the x_label phases (for
``eval_protocol: mmrec``), and ``<ds>.item`` listing every item id so that items which never occur in an
interaction are still ranked, as in MMRec.
"""

import glob
import hashlib
import json
import os
import shutil
import tempfile
from logging import getLogger

import numpy as np
import pandas as pd

from recbole_ssr.errors import DataError

MMREC_ID_COLUMNS = ("userID", "itemID")
MMREC_SPLIT_COLUMN = "x_label"
PHASES = ("train", "valid", "test")
_CONVERTER_VERSION = 1

DOWNLOAD_HINT = (
    "The Amazon Baby/Sports/Clothing folders are published by the MMRec project (its README links a Google-Drive "
    "folder); see dataset/README.md for the layout and how to add your own dataset."
)


def detect_layout(folder, name, declared=None):
    """Return ``'mmrec'``, ``'atomic'`` or ``None`` (no interaction file found) for ``folder``."""
    if declared:
        if declared not in ("mmrec", "atomic"):
            raise DataError(f"data_format '{declared}' is unknown: use 'mmrec' or 'atomic'.")
        return declared
    inter = os.path.join(folder, f"{name}.inter")
    for path in [inter] + [os.path.join(folder, f"{name}.{phase}.inter") for phase in PHASES]:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise DataError(f"{path} is empty (0 bytes): expected a header line and one interaction per line. "
                            "Copy or regenerate the file (an interrupted copy or a full disk leaves such files).")
    if not os.path.isfile(inter):
        if os.path.isfile(os.path.join(folder, f"{name}.train.inter")):
            return "atomic"
        return None
    with open(inter, "r", encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    return "atomic" if all(":" in column for column in header) else "mmrec"


def missing_dataset_error(folder, name, modality_files=None):
    expected = [f"{name}.inter"] + list(modality_files or [])
    return DataError(
        f"dataset '{name}' not found: expected {', '.join(expected)} in {folder} (data_path/dataset). "
        f"Put the dataset folder there or pass --data_path=DIR (the folder that contains '{name}/'). "
        + DOWNLOAD_HINT
    )


def read_mmrec_inter(path, require_split=True):
    """Read and validate an MMRec ``.inter`` file; returns a DataFrame with int64 ids (and x_label if present)."""
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a tab-separated file with a header line ({exc}).") from None
    columns = list(frame.columns)
    for column in MMREC_ID_COLUMNS:
        if column not in columns:
            raise DataError(
                f"{path}: column '{column}' is missing (found: {', '.join(columns) or 'none'}). An MMRec .inter "
                "file is tab-separated with the header 'userID itemID [rating] [timestamp] x_label'."
            )
    if require_split and MMREC_SPLIT_COLUMN not in columns:
        raise DataError(
            f"{path}: column 'x_label' is missing, so the fixed train/valid/test split (0/1/2) is unknown. "
            "Add the x_label column, or run with --eval_protocol=recbole to draw a random split instead."
        )
    if frame.empty:
        raise DataError(f"{path}: has a header but no interactions.")
    for column in MMREC_ID_COLUMNS + ((MMREC_SPLIT_COLUMN,) if MMREC_SPLIT_COLUMN in columns else ()):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values < 0) | (values != values.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column '{column}' must hold non-negative integers, but data row {row + 1} has "
                f"'{frame[column].iloc[row]}'. MMRec ids are 0-based integers; fix or remove that row."
            )
        frame[column] = values.astype(np.int64)
    if MMREC_SPLIT_COLUMN in columns:
        labels = set(frame[MMREC_SPLIT_COLUMN].unique().tolist())
        if not labels <= {0, 1, 2}:
            raise DataError(
                f"{path}: column 'x_label' must be 0 (train), 1 (valid) or 2 (test); found {sorted(labels - {0, 1, 2})}."
            )
        for code, phase in enumerate(PHASES):
            if code not in labels:
                raise DataError(f"{path}: no interaction has x_label {code} ({phase}); every phase needs at least one.")
    for column in ("rating", "timestamp"):
        if column in columns:
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise DataError(f"{path}: column '{column}' must be numeric; data row {row + 1} has '{frame[column].iloc[row]}'.")
            frame[column] = values
    return frame


def _signature(path):
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_atomic(frame, path, columns):
    typed = {"userID": "user_id:token", "itemID": "item_id:token", "rating": "rating:float", "timestamp": "timestamp:float"}
    out = frame[list(columns)].rename(columns=typed)
    out.to_csv(path, sep="\t", index=False)


def convert_mmrec(folder, name, cache_dir, n_items_hint=0, require_split=True):
    """Convert ``<folder>/<name>.inter`` (MMRec) into RecBole atomic files under ``cache_dir``; return that folder.

    ``n_items_hint``: the number of feature rows; every id below it becomes an item even without interactions.
    The conversion is written to a temporary folder and renamed into place, so concurrent runs never see half a
    conversion; an up-to-date conversion is reused.
    """
    source = os.path.join(folder, f"{name}.inter")
    key = dict(_signature(source), n_items=int(n_items_hint), version=_CONVERTER_VERSION)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    target = os.path.join(cache_dir, "converted", f"{name}-{digest}")
    if os.path.isfile(os.path.join(target, "DONE")):
        return target

    frame = read_mmrec_inter(source, require_split=require_split)
    columns = [c for c in ("userID", "itemID", "rating", "timestamp") if c in frame.columns]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(target))
    try:
        _write_atomic(frame, os.path.join(staging, f"{name}.inter"), columns)
        counts = {}
        if MMREC_SPLIT_COLUMN in frame.columns:
            for code, phase in enumerate(PHASES):
                part = frame[frame[MMREC_SPLIT_COLUMN] == code]
                _write_atomic(part, os.path.join(staging, f"{name}.{phase}.inter"), columns)
                counts[phase] = int(len(part))
        n_items = max(int(n_items_hint), int(frame["itemID"].max()) + 1)
        pd.DataFrame({"item_id:token": np.arange(n_items)}).to_csv(
            os.path.join(staging, f"{name}.item"), sep="\t", index=False)
        with open(os.path.join(staging, "DONE"), "w", encoding="utf-8") as f:
            json.dump(dict(key, phases=counts, n_interactions=int(len(frame))), f)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished the same conversion first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    getLogger().info(f"converted MMRec dataset {source} -> {target} ({len(frame)} interactions, {counts})")
    return target


def discover_modality_files(folder):
    """Every ``<name>_feat.npy`` in ``folder`` -> {name: file}, sorted by name."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "*_feat.npy"))):
        found[os.path.basename(path)[: -len("_feat.npy")]] = os.path.basename(path)
    return found
