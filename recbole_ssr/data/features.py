"""Content-feature files: which modalities a dataset has, loading them, and aligning rows to RecBole item ids.

Dataset yaml keys (all optional):

``modalities``
    ``{name: file}`` (files relative to the dataset folder), or a list of names meaning ``<name>_feat.npy``.
    Absent: every ``<name>_feat.npy`` in the dataset folder (so an MMRec folder needs no yaml).
``feature_item_ids``
    A text file with one item token per line: line i names the item whose features are row i of every feature
    file. Absent: row i belongs to item token ``i`` (the MMRec convention) and every item must have a row.
``use_modalities``
    A subset of the modality names to use (default: all).

RecBole re-numbers item tokens (``field2id_token``), so row i of a file is generally *not* RecBole item i;
:func:`align_features` builds ``[item_num, dim]`` float32 matrices whose row j is RecBole item j (row 0, the
padding item, is zero). With ``feature_item_ids``, items without a row get the mean feature row of that modality;
the count is logged and returned.
"""

import glob
import os
from collections import OrderedDict
from logging import getLogger

import numpy as np
import torch

from recbole_ssr.core.errors import DataError


def discover_modality_files(folder):
    """Every ``<name>_feat.npy`` in ``folder`` -> {name: file}, sorted by name."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "*_feat.npy"))):
        found[os.path.basename(path)[: -len("_feat.npy")]] = os.path.basename(path)
    return found


def resolve_modalities(config, folder, select=True):
    """Return ``OrderedDict(name -> absolute file path)`` of the modalities to use (``select=False``: every
    modality of the dataset, ignoring ``use_modalities``)."""
    spec = config["modalities"] if "modalities" in config else None
    if spec is None:
        files = discover_modality_files(folder)
    elif isinstance(spec, dict):
        files = OrderedDict((str(k), str(v)) for k, v in spec.items())
    elif isinstance(spec, (list, tuple)):
        files = OrderedDict((str(k), f"{k}_feat.npy") for k in spec)
    else:
        raise DataError(
            f"config key 'modalities' must be a mapping {{name: file}} or a list of names, got {spec!r}."
        )
    selected = config["use_modalities"] if "use_modalities" in config and select else None
    if selected is not None:
        if isinstance(selected, str):
            selected = [s for s in selected.split(",") if s]
        unknown = [m for m in selected if m not in files]
        if unknown:
            raise DataError(
                f"use_modalities names {unknown}, but dataset '{config['dataset']}' has modalities "
                f"{list(files) or 'none'} (from the dataset yaml 'modalities' or the *_feat.npy files in {folder})."
            )
        files = OrderedDict((m, files[m]) for m in selected)
    return OrderedDict((name, os.path.join(folder, path)) for name, path in files.items())


def load_feature_file(path, modality):
    """Load one ``.npy`` feature matrix as float32 ``[rows, dim]``; clear errors for every way it can be wrong."""
    if not os.path.isfile(path):
        raise DataError(
            f"feature file for modality '{modality}' not found: {path}. Expected a float array "
            "[n_items, dim] saved with numpy.save; fix the path in the dataset yaml 'modalities' or add the file."
        )
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc}). Save features with numpy.save(path, array).") from None
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array [n_items, dim], got shape {array.shape}.")
    if array.shape[1] == 0:
        raise DataError(f"{path}: has shape {array.shape}, i.e. no feature columns: modality '{modality}' would be "
                        "empty. Re-extract the features, or remove the file (or leave the modality out with "
                        "use_modalities).")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == np.bool_):
        raise DataError(f"{path}: expected numeric features, got dtype {array.dtype}.")
    array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"{path}: {len(bad_rows)} rows contain NaN or Inf (first: row {int(bad_rows[0])}). "
            "Fix or re-extract those features; for items without features, leave their row out and list the "
            "rest in feature_item_ids (missing items then get the mean feature)."
        )
    return array


def read_feature_item_ids(path):
    if not os.path.isfile(path):
        raise DataError(f"feature_item_ids file not found: {path}. Expected one item token per line (line i = row i).")
    with open(path, "r", encoding="utf-8") as f:
        tokens = [line.rstrip("\r\n") for line in f]
    while tokens and tokens[-1] == "":
        tokens.pop()
    if len(set(tokens)) != len(tokens):
        raise DataError(f"{path}: item tokens must be unique (one row per item).")
    return tokens


def feature_row_tokens(config, folder):
    """Tokens naming each feature row, or ``None`` for the implicit MMRec rule (row i = item token 'i')."""
    declared = config["feature_item_ids"] if "feature_item_ids" in config else None
    if declared is None:
        return None
    return read_feature_item_ids(os.path.join(folder, declared))


def align_features(matrix, path, modality, item_tokens, row_tokens):
    """Rows of ``matrix`` re-ordered to RecBole's internal item ids.

    Args:
        matrix: float32 ``[rows, dim]``.
        item_tokens: ``dataset.field2id_token[item_field]``; index 0 is the padding token.
        row_tokens: token of each row, or ``None`` for row i = token ``str(i)``.
    Returns:
        ``(aligned [len(item_tokens), dim] float32, number of items filled with the mean row)``.
    """
    if row_tokens is None:
        row_of = None
    else:
        if len(row_tokens) != matrix.shape[0]:
            raise DataError(
                f"{path}: has {matrix.shape[0]} rows but feature_item_ids lists {len(row_tokens)} items; "
                "row i must hold the features of the item on line i."
            )
        row_of = {token: i for i, token in enumerate(row_tokens)}
    rows = np.full(len(item_tokens), -1, dtype=np.int64)
    for internal_id in range(1, len(item_tokens)):
        token = str(item_tokens[internal_id])
        if row_of is None:
            rows[internal_id] = int(token) if token.isdigit() and int(token) < matrix.shape[0] else -1
        else:
            rows[internal_id] = row_of.get(token, -1)
    missing = np.flatnonzero(rows[1:] < 0) + 1
    if row_of is None and len(missing):
        example = str(item_tokens[missing[0]])
        raise DataError(
            f"{path}: has {matrix.shape[0]} rows, but the interactions name item '{example}' "
            f"({len(missing)} items in all) that has no row; row i must hold item i's features, so the file "
            f"needs at least {_max_numeric(item_tokens) + 1} rows. Re-extract the features for every item, or declare "
            "feature_item_ids in the dataset yaml to map rows to items explicitly."
        )
    aligned = np.zeros((len(item_tokens), matrix.shape[1]), dtype=np.float32)
    present = rows >= 0
    aligned[present] = matrix[rows[present]]
    if len(missing):
        aligned[missing] = matrix.mean(axis=0) if matrix.shape[0] else 0.0
        getLogger().warning(
            f"modality '{modality}': {len(missing)} of {len(item_tokens) - 1} items have no feature row in {path}; "
            "filled with the mean feature row."
        )
    return aligned, int(len(missing))


def _max_numeric(tokens):
    values = [int(t) for t in tokens[1:] if str(t).isdigit()]
    return max(values) if values else 0


def load_modalities(config, item_tokens, folder):
    """Load and align every modality. Returns ``(OrderedDict name -> FloatTensor, report dict)``."""
    row_tokens = feature_row_tokens(config, folder)
    features, report = OrderedDict(), OrderedDict()
    for modality, path in resolve_modalities(config, folder).items():
        matrix = load_feature_file(path, modality)
        aligned, n_missing = align_features(matrix, path, modality, item_tokens, row_tokens)
        features[modality] = torch.from_numpy(aligned)
        zero = int((~aligned[1:].any(axis=1)).sum())  # real items only: row 0 is the padding item
        if zero:
            getLogger().warning(
                f"modality '{modality}': {zero} of {len(item_tokens) - 1} items have an all-zero feature row in "
                f"{path}; such an item has no direction, so its cosine similarity to every item is 0 and the kNN "
                "item graphs give it arbitrary neighbours. Kept as they are; re-extract those items' features if "
                "they are missing values.")
        report[modality] = {"file": path, "dim": int(matrix.shape[1]), "rows": int(matrix.shape[0]),
                            "items_without_row": n_missing, "items_with_zero_row": zero}
    return features, report


def feature_row_count(config, folder):
    """Rows of the dataset's first modality file (cheap, memory-mapped), 0 when there is none or it is unreadable.
    Whatever ``use_modalities`` selects (``[]`` included), so every modality subset ranks the same items."""
    for path in resolve_modalities(config, folder, select=False).values():
        try:
            return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
        except (ValueError, OSError, EOFError):
            return 0
    return 0


def check_modalities_agree(config, folder):
    """Every modality file of the dataset (whatever ``use_modalities`` selects) has the same number of rows: with the
    MMRec rule row i is item i in each of them, so a file with more or fewer rows describes other items. Checked
    for all files at once, so the answer does not depend on the order of the modality names."""
    if "feature_item_ids" in config and config["feature_item_ids"] is not None:
        return  # rows are named explicitly; align_features checks each file against the list
    rows = {}
    for modality, path in resolve_modalities(config, folder, select=False).items():
        try:
            rows[modality] = (path, int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0]))
        except (ValueError, OSError, EOFError, IndexError):
            continue  # missing or unreadable: load_feature_file reports it with its own message
    if len({count for _, count in rows.values()}) > 1:
        listing = "; ".join(f"{os.path.basename(path)} ({m}): {count} rows" for m, (path, count) in sorted(rows.items()))
        raise DataError(
            f"the modality files of dataset '{config['dataset']}' in {folder} disagree on the number of items: "
            f"{listing}. Row i of every feature file must hold item i, so all need one row per item; re-extract the "
            "short file(s), or remove the file that belongs to another dataset.")
