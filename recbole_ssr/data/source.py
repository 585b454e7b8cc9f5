"""Where a dataset's files are, what layout they use, and the one-time conversion of MMRec folders.

Two layouts are read as they are:

* **MMRec** (``<ds>.inter`` with a plain header ``userID itemID [rating] [timestamp] x_label``, 0-based ids,
  ``x_label`` 0/1/2 = train/valid/test, feature ``.npy`` files whose row i is itemID i);
* **RecBole atomic** (``<ds>.inter`` with typed headers such as ``user_id:token``, optionally
  ``<ds>.train.inter`` / ``.valid.inter`` / ``.test.inter`` for a fixed split, plus feature files declared in the
  dataset yaml).

:func:`prepare_source` resolves a dataset once per run into one :class:`DataSource` (the user's folder, its layout,
the folder RecBole reads — converted, cold-split — and the fixed split files): it builds the embedded default
dataset when missing, converts MMRec folders and applies an item cold-start split, writes the RecBole keys that
follow from them into the config, and loads nothing (``create_dataset`` loads; the search driver only prepares).

An MMRec ``.inter`` is converted once into RecBole atomic files under ``cache_dir`` (keyed by the source file's
path, size and modification time, so an edited source is re-converted): ``<ds>.inter`` with every interaction
(for ``eval_protocol: recbole``), ``<ds>.train|valid|test.inter`` holding exactly the x_label phases (for
``eval_protocol: mmrec``), and ``<ds>.item`` listing every item id so that items which never occur in an
interaction are still ranked, as in MMRec.
"""

import atexit
import dataclasses
import os
import shutil
import tempfile
from logging import getLogger
from typing import Optional, Tuple

import numpy as np
import pandas as pd

from recbole_ssr.core.cache import content_key, file_signature
from recbole_ssr.data.cold_split import apply_cold_item_split, cold_split_settings
from recbole_ssr.data.default import DEFAULT_DATASET, build_default_dataset
from recbole_ssr.data.features import check_modalities_agree, feature_row_count
from recbole_ssr.core.errors import ConfigError, DataError
from recbole_ssr.core.safe_io import staged_folder, write_json

MMREC_ID_COLUMNS = ("userID", "itemID")
MMREC_SPLIT_COLUMN = "x_label"
PHASES = ("train", "valid", "test")
_CONVERTER_VERSION = 1

DOWNLOAD_HINT = (
    "The Amazon Baby/Sports/Clothing folders are published by the MMRec project (its README links a Google-Drive "
    "folder); see dataset/README.md for the layout and how to add your own dataset."
)


def non_utf8_error(path):
    """The :class:`DataError` for a text file with a byte sequence that is not UTF-8 (naming its line), or None."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return DataError(f"{path}: line {line}, column {column} holds the byte {data[exc.start:exc.start + 1]!r}, "
                         "which is not UTF-8; interaction files must be UTF-8 text. Convert the file (e.g. iconv -f "
                         "latin1 -t utf-8) or fix that line.")
    return None


def read_header(path):
    """The first line of an interaction file, split at tabs (a clear error for a byte that is not UTF-8)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.readline().rstrip("\r\n").split("\t")
    except UnicodeDecodeError:
        raise non_utf8_error(path) from None


def detect_layout(folder, name, declared=None):
    """Return ``'mmrec'``, ``'atomic'`` or ``None`` (no interaction file found) for ``folder``."""
    if declared:
        if declared not in ("mmrec", "atomic"):
            raise DataError(f"data_format '{declared}' is unknown: use 'mmrec' or 'atomic'.")
        return declared
    inter = os.path.join(folder, f"{name}.inter")
    splits = [os.path.join(folder, f"{name}.{phase}.inter") for phase in PHASES]
    for path in [inter] + splits:
        if os.path.isdir(path):
            raise DataError(f"{path} is a folder, but the interaction file is expected there (tab-separated text "
                            "with a header line); put the file itself at that path.")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise DataError(f"{path} is empty (0 bytes): expected a header line and one interaction per line. "
                            "Copy or regenerate the file (an interrupted copy or a full disk leaves such files).")
    if not os.path.isfile(inter):
        if os.path.isfile(splits[0]):
            return "atomic"
        return None
    header = read_header(inter)
    if not all(":" in column for column in header):
        return "mmrec"
    split_column = [c for c in header if c.split(":")[0] == MMREC_SPLIT_COLUMN]
    if split_column and not all(os.path.isfile(path) for path in splits):
        raise DataError(
            f"{inter}: the header is RecBole-typed ({' '.join(header)}), and RecBole's atomic files have no split "
            f"column, so its '{split_column[0]}' would be ignored and a random split drawn. For the fixed x_label "
            "split write the MMRec header (userID itemID [rating] [timestamp] x_label, without ':type'); for a random "
            "split remove the column.")
    return "atomic"


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
    except UnicodeDecodeError:
        raise non_utf8_error(path) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
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


#: without feature files, item ids may run past the number of distinct items by this factor (ids left out by a
#: filter) before they are taken for something else than MMRec's 0-based item ids
SPARSE_ID_FACTOR = 100


def check_item_ids(frame, path, n_feature_rows):
    """MMRec item ids are rows of the feature files (row i = item i), and every id below the largest is an item to
    rank: an id at or past the feature rows, or (without features) ids far beyond the number of distinct items,
    is an error before anything is allocated for them."""
    largest = int(frame["itemID"].max())
    distinct = int(frame["itemID"].nunique())
    if n_feature_rows and largest >= n_feature_rows:
        row = int(np.flatnonzero(frame["itemID"].to_numpy() >= n_feature_rows)[0])
        raise DataError(f"{path}: data row {row + 1} has itemID {frame['itemID'].iloc[row]}, but the feature files have "
                        f"{n_feature_rows} rows (row i = item i, so item ids are 0..{n_feature_rows - 1}). Remap the ids "
                        "to 0-based row numbers, or extract features for every item.")
    if not n_feature_rows and largest + 1 > max(SPARSE_ID_FACTOR * distinct, 1_000_000):
        raise DataError(f"{path}: the largest itemID is {largest} for {distinct} distinct items; MMRec item ids are "
                        "0-based row numbers (0..n_items-1), and every id below the largest would be ranked as an "
                        "item. Remap the ids (python -m recbole_ssr.data.prepare does), or use RecBole atomic files "
                        "(item_id:token) for arbitrary ids.")


def _write_atomic(frame, path, columns):
    typed = {"userID": "user_id:token", "itemID": "item_id:token", "rating": "rating:float", "timestamp": "timestamp:float"}
    out = frame[list(columns)].rename(columns=typed)
    out.to_csv(path, sep="\t", index=False)


def convert_mmrec(folder, name, cache_dir, n_items_hint=0, require_split=True, rows_are_items=True):
    """Convert ``<folder>/<name>.inter`` (MMRec) into RecBole atomic files under ``cache_dir``; return that folder.

    ``n_items_hint``: the number of feature rows; every id below it becomes an item even without interactions
    (``rows_are_items``: row i of the feature files is item i, so no item id may reach ``n_items_hint``).
    The conversion is written to a temporary folder and renamed into place, so concurrent runs never see half a
    conversion; an up-to-date conversion is reused.
    """
    source = os.path.join(folder, f"{name}.inter")
    key = dict(file_signature(source), n_items=int(n_items_hint), version=_CONVERTER_VERSION)
    digest = content_key(key)
    target = os.path.join(cache_dir, "converted", f"{name}-{digest}")
    if os.path.isfile(os.path.join(target, "DONE")):
        return target

    frame = read_mmrec_inter(source, require_split=require_split)
    check_item_ids(frame, source, int(n_items_hint) if rows_are_items else 0)
    columns = [c for c in ("userID", "itemID", "rating", "timestamp") if c in frame.columns]
    counts = {}
    with staged_folder(target, marker="DONE") as staging:
        _write_atomic(frame, os.path.join(staging, f"{name}.inter"), columns)
        if MMREC_SPLIT_COLUMN in frame.columns:
            for code, phase in enumerate(PHASES):
                part = frame[frame[MMREC_SPLIT_COLUMN] == code]
                _write_atomic(part, os.path.join(staging, f"{name}.{phase}.inter"), columns)
                counts[phase] = int(len(part))
        n_items = max(int(n_items_hint), int(frame["itemID"].max()) + 1)
        pd.DataFrame({"item_id:token": np.arange(n_items)}).to_csv(
            os.path.join(staging, f"{name}.item"), sep="\t", index=False)
        write_json(os.path.join(staging, "DONE"), dict(key, phases=counts, n_interactions=int(len(frame))),
                   indent=None)
    getLogger().info(f"converted MMRec dataset {source} -> {target} ({len(frame)} interactions, {counts})")
    return target


@dataclasses.dataclass
class DataSource:
    """Where one dataset's files are and how they are read, resolved once (:func:`prepare_source`)."""

    name: str
    folder: str  # the user's dataset folder (<data_path>/<dataset>, or dataset_dir)
    layout: Optional[str]  # 'mmrec', 'atomic', or None (no interaction file found)
    data_path: Optional[str] = None  # the folder RecBole reads: the folder itself, its conversion, its cold split
    split_files: Optional[Tuple[str, ...]] = None  # <ds>.train/.valid/.test.inter under data_path (fixed split)


def locate(folder, name, declared=None):
    """The :class:`DataSource` of ``folder`` with its layout detected (nothing converted yet)."""
    return DataSource(name=name, folder=os.path.abspath(folder), layout=detect_layout(folder, name, declared))


def _modality_file_names(config):
    spec = config["modalities"] if "modalities" in config else None
    if isinstance(spec, dict):
        return list(spec.values())
    if isinstance(spec, (list, tuple)):
        return [f"{m}_feat.npy" for m in spec]
    return []


def prepare_source(config):
    """Locate, build (embedded default dataset), convert (MMRec, once, cached) and cold-split the dataset named in
    ``config``; set the RecBole keys that follow (``data_path``, ``load_col``, field names, ``benchmark_filename``)
    and return the :class:`DataSource`. Loads no data. The layout the :class:`~recbole_ssr.config.configurator.Config` detected
    (``config.data_source``) is reused."""
    name = config["dataset"]
    folder = config["dataset_dir"] if "dataset_dir" in config and config["dataset_dir"] else config["data_path"]
    config["dataset_dir"] = folder
    declared = config["data_format"] if "data_format" in config else None
    if name == DEFAULT_DATASET and not os.path.isfile(os.path.join(folder, f"{name}.inter")):
        build_default_dataset(folder)
    source = getattr(config, "data_source", None)
    if (declared or source is None or source.layout is None or source.folder != os.path.abspath(folder)
            or source.name != name):
        source = locate(folder, name, declared)
    if source.layout is None:
        raise missing_dataset_error(folder, name, _modality_file_names(config))

    check_modalities_agree(config, folder)
    protocol = config["eval_protocol"]
    if source.layout == "mmrec":
        rows_named = "feature_item_ids" in config and config["feature_item_ids"] is not None
        converted = convert_mmrec(folder, name, cache_dir_or_scratch(config), feature_row_count(config, folder),
                                  require_split=(protocol == "mmrec"), rows_are_items=not rows_named)
        config["data_path"] = converted
        columns = [c.split(":")[0] for c in read_header(os.path.join(converted, f"{name}.inter"))]
        config["load_col"] = {"inter": columns, "item": ["item_id"]}
        config["USER_ID_FIELD"], config["ITEM_ID_FIELD"] = "user_id", "item_id"
        config["RATING_FIELD"] = "rating" if "rating" in columns else None
        config["TIME_FIELD"] = "timestamp" if "timestamp" in columns else None
    if protocol == "mmrec" or config["benchmark_filename"]:
        # the fixed split: always under mmrec; under recbole only when benchmark_filename asks for it
        config["benchmark_filename"] = ["train", "valid", "test"]
        missing = [f"{name}.{p}.inter" for p in PHASES
                   if not os.path.isfile(os.path.join(config["data_path"], f"{name}.{p}.inter"))]
        if missing:
            raise DataError(
                f"eval_protocol 'mmrec' needs a fixed split, but {', '.join(missing)} are missing in {folder}. "
                "Provide the split (MMRec: an x_label column; RecBole atomic: <ds>.train/.valid/.test.inter), "
                "or run with --eval_protocol=recbole to draw a random split."
            )
    _apply_cold_item_split(config, name)
    source = dataclasses.replace(source, data_path=config["data_path"])
    if config["benchmark_filename"]:
        source.split_files = tuple(os.path.join(source.data_path, f"{name}.{p}.inter") for p in PHASES)
    config.data_source = source
    return source


def _apply_cold_item_split(config, name):
    """``cold_item_ratio > 0``: read the fixed split from its item cold-start version (recbole_ssr.data.cold_split)."""
    ratio, seed = cold_split_settings(config)
    if ratio <= 0:
        return
    if not config["benchmark_filename"]:
        raise ConfigError(
            "cold_item_ratio needs the fixed train/valid/test split: use eval_protocol mmrec (MMRec folders) or "
            "give the split files with benchmark_filename (eval_protocol recbole draws a random split).")
    config["data_path"] = apply_cold_item_split(config["data_path"], name, config["ITEM_ID_FIELD"], ratio, seed,
                                                cache_dir_or_scratch(config))


_SCRATCH = []


def cache_dir_or_scratch(config):
    """``cache_dir``, or with ``cache_dir: ~`` a private temporary folder removed when the process exits (the
    converted files are read into memory once, so nothing is cached between runs)."""
    if config["cache_dir"]:
        return config["cache_dir"]
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="recbole-ssr-scratch-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]
