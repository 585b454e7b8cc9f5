"""The preparation pipeline: raw files in, an MMRec-layout dataset folder out (see ``recbole_ssr.data.prepare``)."""

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recbole_ssr.data.prepare import encoders as enc
from recbole_ssr.core.safe_io import finite_json, new_staging_folder, replace_folder, save_with, write_bytes
from recbole_ssr.data.prepare.errors import PrepareError
from recbole_ssr.data.prepare.kcore import kcore_mask
from recbole_ssr.data.prepare.readers import index_images, load_image, read_interactions, read_items
from recbole_ssr.data.prepare.split import SPLITS, assign_labels

FALLBACKS = ("mean", "zero")
USER_MAPPING = "u_id_mapping.csv"
ITEM_MAPPING = "i_id_mapping.csv"
SUMMARY = "prepare_summary.json"
MODALITY_FILES = {
    "text": ("text_feat.npy", "missing_text_itemIDs.csv"),
    "image": ("image_feat.npy", "missing_image_itemIDs.csv"),
}
PHASES = ("train", "valid", "test")


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` wrote. ``missing`` maps a modality to the itemIDs that got the fallback."""

    output: str
    name: str
    n_users: int
    n_items: int
    n_interactions: int
    split_counts: dict
    files: list
    missing: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def _default_log(message):
    logging.getLogger("recbole_ssr.data.prepare").info(message)


def _progress_bar(total, desc, progress):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=(None if progress is None else not progress),
                leave=False, dynamic_ncols=True)


def _check_options(name, kcore, seed, split, batch_size, fallback):
    if not isinstance(name, str) or not name.strip() or name != os.path.basename(name) or name.startswith("."):
        raise PrepareError(f"--name {name!r}: expected a plain dataset name such as 'baby' (no folders, not "
                           "starting with a dot); it becomes <output>/<name>.inter.")
    if not isinstance(kcore, (int, np.integer)) or kcore < 0:
        raise PrepareError(f"--kcore {kcore!r}: expected a whole number >= 0 (0 or 1 = no filtering; the "
                           "benchmarks use 5).")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PrepareError(f"--seed {seed!r}: expected a whole number >= 0.")
    if split not in SPLITS:
        raise PrepareError(f"--split {split!r}: expected one of {', '.join(SPLITS)}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise PrepareError(f"--batch-size {batch_size!r}: expected a whole number >= 1.")
    if fallback not in FALLBACKS:
        raise PrepareError(f"--fallback {fallback!r}: expected one of {', '.join(FALLBACKS)}.")


def _examples(values, limit=3):
    values = list(values)[:limit]
    return ", ".join(repr(v) for v in values) if values else "none"


def _no_match_error(kind, path, item_ids, other_ids):
    return PrepareError(
        f"{kind} {path}: none of its {len(other_ids)} item ids matches an item of the interactions "
        f"(interactions: {_examples(item_ids)}; {kind}: {_examples(sorted(other_ids))}). Ids must be the same text "
        "in both (same column, same leading zeros/case)."
    )


def _checked(vectors, count, encoder, kind):
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (count, encoder.dim):
        raise PrepareError(f"{kind} encoder {encoder.name}: returned shape {vectors.shape}, expected "
                           f"({count}, {encoder.dim}).")
    if not np.isfinite(vectors).all():
        raise PrepareError(f"{kind} encoder {encoder.name}: returned NaN or infinite values.")
    return vectors


def _fill(features, present, fallback):
    """Rows of items without the modality: the mean of the rows that have it, or zeros."""
    if fallback == "mean" and present.any() and not present.all():
        mean = features[present].astype(np.float64).mean(axis=0).astype(np.float32)
        features[~present] = mean
    return features


def _text_features(items_path, item_ids, encoder, device, batch_size, fallback, progress, log):
    raw = read_items(items_path)
    for note in raw.notes:
        log(note)
    matched = sum(1 for item in item_ids if item in raw.texts)
    if matched == 0:
        raise _no_match_error("items file", items_path, item_ids, raw.texts.keys())
    texts = [raw.texts.get(item, "") for item in item_ids]
    present = np.array([bool(t) for t in texts], dtype=bool)
    if not present.any():
        raise PrepareError(f"items file {items_path}: the {matched} matching items all have empty text fields "
                           f"({', '.join(c for r, c in raw.columns.items() if r != 'item' and c)}); nothing to "
                           "encode. Fill in titles/descriptions, or leave out --items.")
    if isinstance(encoder, (str, type(None))):
        encoder = enc.text_encoder(encoder, device)
    rows = np.flatnonzero(present)
    features = np.zeros((len(item_ids), encoder.dim), dtype=np.float32)
    log(f"text features: encoding {len(rows)} items with {encoder.name} (batches of {batch_size})")
    with _progress_bar(len(rows), f"text ({encoder.name})", progress) as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            features[batch] = _checked(encoder.encode([texts[i] for i in batch]), len(batch), encoder, "text")
            bar.update(len(batch))
    features = _fill(features, present, fallback)
    info = {
        "file": os.path.basename(items_path), "columns": raw.columns, "encoder": encoder.name, "dim": encoder.dim,
        "items_in_file": len(raw.texts), "items_matched": matched, "items_with_text": int(present.sum()),
        "items_without_text": int((~present).sum()), "fallback": fallback,
    }
    return features, np.flatnonzero(~present), info


def _image_features(images_dir, item_ids, encoder, device, batch_size, fallback, skip_bad_images, progress,
                    log):
    index = index_images(images_dir)
    for note in index.notes[:20]:
        log(note)
    paths = [index.files.get(item) for item in item_ids]
    present = np.array([p is not None for p in paths], dtype=bool)
    if not present.any():
        raise _no_match_error("images folder", images_dir, item_ids, index.files.keys())
    if isinstance(encoder, (str, type(None))):
        encoder = enc.image_encoder(encoder, device)
    rows = np.flatnonzero(present)
    features = np.zeros((len(item_ids), encoder.dim), dtype=np.float32)
    unreadable = []
    log(f"image features: encoding {len(rows)} images with {encoder.name} (batches of {batch_size})")
    with _progress_bar(len(rows), f"images ({encoder.name})", progress) as bar:
        for start in range(0, len(rows), batch_size):
            batch, images = [], []
            for i in rows[start:start + batch_size]:
                try:
                    images.append(load_image(paths[i]))
                    batch.append(i)
                except PrepareError as exc:
                    if not skip_bad_images:
                        raise
                    log(f"skipped: {exc}")
                    unreadable.append(os.path.basename(paths[i]))
                    present[i] = False
            if batch:
                features[batch] = _checked(encoder.encode(images), len(batch), encoder, "image")
            bar.update(len(rows[start:start + batch_size]))
    if not present.any():
        raise PrepareError(f"images folder {images_dir}: no image of a dataset item could be read "
                           f"({len(unreadable)} unreadable).")
    features = _fill(features, present, fallback)
    info = {
        "folder": os.path.basename(os.path.normpath(images_dir)), "encoder": encoder.name, "dim": encoder.dim,
        "images_in_folder": len(index.files), "items_with_image": int(present.sum()),
        "items_without_image": int((~present).sum()), "unreadable_skipped": sorted(unreadable),
        "fallback": fallback,
    }
    return features, np.flatnonzero(~present), info


def file_sha256(path):
    """The sha256 of a file's content (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_output_is_ours(output, overwrite=False):
    """``--output`` is replaced as a whole, so it must be missing, empty, or a folder an earlier run of this command
    wrote (its ``prepare_summary.json`` lists every file in it) whose files are unchanged since (their content hashes
    are in the summary; ``overwrite`` allows replacing changed ones). Anything else is refused and left untouched."""
    if not output or not os.path.isdir(output):
        return
    present = sorted(os.listdir(output))
    if not present:
        return
    ours, hashes = set(), {}
    summary_path = os.path.join(output, SUMMARY)
    if os.path.isfile(summary_path):
        try:
            with open(summary_path, "r", encoding="utf-8") as handle:
                summary = json.load(handle)
            ours, hashes = set(summary.get("files", [])), dict(summary.get("sha256") or {})
        except (OSError, ValueError, AttributeError, TypeError):
            ours, hashes = set(), {}
    changed = [f for f in present if f in hashes and os.path.isfile(os.path.join(output, f))
               and file_sha256(os.path.join(output, f)) != hashes[f]]
    if changed and not overwrite:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise PrepareError(
            f"--output {output}: {shown} changed since prepare wrote {'it' if len(changed) == 1 else 'them'} (the "
            f"content no longer matches the hashes in {SUMMARY}); the folder is left untouched. Pass --overwrite to "
            "replace the edited file(s) anyway, or copy them elsewhere first.")
    foreign = [f for f in present if f not in ours]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PrepareError(
            f"--output {output} already holds files this command did not write ({shown}); it is left untouched. "
            f"Pass a new or empty folder (e.g. --output {os.path.normpath(output)}_prepared), or move those files "
            "away first.")


def _tsv_bytes(frame):
    return frame.to_csv(sep="\t", index=False, lineterminator="\n").encode("utf-8")


def prepare_dataset(interactions, output, name, items=None, images=None, kcore=5, seed=999, split="random",
                    text_encoder=None, image_encoder=None, batch_size=32, device=None, fallback="mean",
                    skip_bad_images=False, progress=None, log=None, overwrite=False):
    """Turn raw interactions (+ item metadata, + an image folder) into an MMRec-layout dataset folder.

    ``text_encoder``/``image_encoder``: a spec string (see :mod:`recbole_ssr.data.prepare.encoders`), ``None`` for the
    defaults, or an encoder object. ``progress``: ``None`` = progress bars on a terminal only. ``log``: a callable
    taking one message string (default: the ``recbole_ssr.data.prepare`` logger). Nothing is written unless every step
    succeeds. ``overwrite``: replace files of an earlier run that were edited since (refused otherwise).
    Returns a :class:`PrepareResult`; raises :class:`PrepareError` for bad input.
    """
    log = log or _default_log
    _check_options(name, kcore, seed, split, batch_size, fallback)
    interactions, output = os.fspath(interactions), os.fspath(output)
    items = os.fspath(items) if items is not None else None
    images = os.fspath(images) if images is not None else None
    if items is not None and not os.path.isfile(items):
        raise PrepareError(f"items file {items} does not exist or is not a file: check the --items path.")
    if images is not None and not os.path.isdir(images):
        raise PrepareError(f"images folder {images} does not exist or is not a folder: check the --images path.")
    if output and os.path.exists(output) and not os.path.isdir(output):
        raise PrepareError(f"--output {output} is a file; pass a folder (it is created if missing).")
    outputs = {os.path.abspath(os.path.join(output, f)) for f in
               [f"{name}.inter", USER_MAPPING, ITEM_MAPPING, SUMMARY] + [f for pair in MODALITY_FILES.values()
                                                                        for f in pair]}
    for given in (interactions, items):
        if given is not None and os.path.abspath(given) in outputs:
            raise PrepareError(f"{given} is both an input and a file this command writes; choose another "
                               "--output folder (or --name) so the raw data is not overwritten.")
    _check_output_is_ours(output, overwrite)
    # encoder specs are checked now (a typo fails fast) and loaded only once the interactions are ready
    if isinstance(text_encoder, str) or text_encoder is None:
        enc.text_encoder_kind(text_encoder)
    else:
        enc.check_encoder(text_encoder, "text")
    if isinstance(image_encoder, str) or image_encoder is None:
        enc.image_encoder_kind(image_encoder)
    else:
        enc.check_encoder(image_encoder, "image")
    if items is not None or images is not None:
        device = enc.resolve_device(device)

    # 1. read, drop repeated (user, item) pairs keeping the earliest interaction
    raw = read_interactions(interactions)
    for note in raw.notes:
        log(note)
    frame = raw.frame
    if split == "chronological" and not raw.has_timestamp:
        raise PrepareError(f"{interactions}: --split chronological needs a timestamp column (timestamp or "
                           "unixReviewTime); add one or use --split random.")
    earliest = frame.sort_values(["timestamp", "row"], kind="stable")
    frame = earliest.drop_duplicates(["user", "item"], keep="first").sort_values("row", kind="stable")
    frame = frame.reset_index(drop=True)
    duplicates = len(raw.frame) - len(frame)
    if duplicates:
        log(f"{duplicates} repeated (user, item) interactions dropped (the earliest of each pair is kept)")

    # 2. k-core, iterated to a fixed point
    user_codes, user_raw = pd.factorize(frame["user"])
    item_codes, item_raw = pd.factorize(frame["item"])
    keep, rounds = kcore_mask(user_codes, item_codes, int(kcore))
    before = {"interactions": len(frame), "users": len(user_raw), "items": len(item_raw)}
    frame = frame[keep].reset_index(drop=True)
    if frame.empty:
        raise PrepareError(
            f"{interactions}: no interaction is left after {kcore}-core filtering ({before['interactions']} "
            f"interactions, {before['users']} users, {before['items']} items before): every user and every item "
            f"must keep at least {kcore} interactions. Use a smaller --kcore (e.g. --kcore 2, or 0 to keep "
            "everything) or more data."
        )

    # 3. new ids 0..n-1 in order of first appearance in the raw file (as MMRec does)
    user_ids, user_raw = pd.factorize(frame["user"])
    item_ids, item_raw = pd.factorize(frame["item"])
    user_raw, item_raw = [str(u) for u in user_raw], [str(i) for i in item_raw]
    log(f"{kcore}-core: {len(frame)} interactions, {len(user_raw)} users, {len(item_raw)} items "
        f"(from {before['interactions']}, {before['users']}, {before['items']}; {rounds} filtering rounds)")

    # 4. split
    labels, order = assign_labels(user_ids, item_ids, frame["timestamp"].to_numpy(), frame["row"].to_numpy(),
                                  split=split, seed=int(seed))
    inter = pd.DataFrame({
        "userID": user_ids.astype(np.int64), "itemID": item_ids.astype(np.int64),
        "rating": frame["rating"].to_numpy(dtype=np.float64), "timestamp": frame["timestamp"].to_numpy(),
        "x_label": labels,
    }).iloc[order]
    counts = {phase: int((labels == code).sum()) for code, phase in enumerate(PHASES)}
    for phase, count in counts.items():
        if count == 0:
            log(f"warning: the {phase} set is empty (every user has fewer than 3 interactions); the runner's "
                "MMRec protocol needs all three -- use a larger --kcore")
    log(f"split ({split}{', seed ' + str(seed) if split == 'random' else ''}): "
        + ", ".join(f"{p} {c}" for p, c in counts.items()))

    # 5. modalities (computed fully before anything is written)
    features, missing, infos = {}, {}, {}
    if items is not None:
        features["text"], missing["text"], infos["text"] = _text_features(
            items, item_raw, text_encoder, device, int(batch_size), fallback, progress, log)
    if images is not None:
        features["image"], missing["image"], infos["image"] = _image_features(
            images, item_raw, image_encoder, device, int(batch_size), fallback, skip_bad_images, progress, log)
    for modality, rows in missing.items():
        if len(rows):
            log(f"{modality}: {len(rows)} of {len(item_raw)} items have no {modality}; their rows are "
                f"{'the mean of the others' if fallback == 'mean' else 'zero'} (listed in "
                f"{MODALITY_FILES[modality][1]})")

    # 6. write: every file into a staging folder beside --output, which then replaces --output as a whole
    try:
        staging = new_staging_folder(output)
    except OSError as exc:
        raise PrepareError(f"--output {output}: cannot create the folder next to it ({exc.strerror or exc}); "
                           "pass a folder in a place you can write to.") from None
    written = []

    def write(file_name, payload):
        path = os.path.join(staging, file_name)
        if isinstance(payload, np.ndarray):
            save_with(path, lambda handle: np.save(handle, payload, allow_pickle=False))
        else:
            write_bytes(path, payload)
        written.append(file_name)

    try:
        write(f"{name}.inter", _tsv_bytes(inter))
        write(USER_MAPPING, _tsv_bytes(pd.DataFrame({"user_id": user_raw, "userID": np.arange(len(user_raw))})))
        write(ITEM_MAPPING, _tsv_bytes(pd.DataFrame({"item_id": item_raw, "itemID": np.arange(len(item_raw))})))
        for modality, (feature_file, missing_file) in MODALITY_FILES.items():
            if modality in features:
                write(feature_file, np.ascontiguousarray(features[modality], dtype=np.float32))
                rows = missing[modality]
                write(missing_file, _tsv_bytes(pd.DataFrame({"itemID": rows.astype(np.int64),
                                                              "item_id": [item_raw[i] for i in rows]})))
                infos[modality].update(feature_file=feature_file, missing_list=missing_file)
        summary = {
            "name": name,
            "interactions": {
                "file": os.path.basename(interactions), "columns": raw.columns, "rows": raw.n_rows,
                "rows_without_ids": raw.n_missing_ids, "duplicates_dropped": int(duplicates),
                "has_rating": raw.has_rating, "has_timestamp": raw.has_timestamp,
            },
            "kcore": {"k": int(kcore), "rounds": int(rounds), "before": before},
            "n_users": len(user_raw), "n_items": len(item_raw), "n_interactions": int(len(inter)),
            "split": {"method": split, "seed": int(seed) if split == "random" else None, "counts": counts},
            "modalities": infos,
            "files": sorted(written + [SUMMARY]),
            # content hashes: a re-run into this folder refuses to replace a file edited since
            "sha256": {f: file_sha256(os.path.join(staging, f)) for f in sorted(written)},
        }
        write(SUMMARY, (json.dumps(finite_json(summary), indent=2, sort_keys=True, allow_nan=False) + "\n")
              .encode("utf-8"))
        _check_output_is_ours(output, overwrite)  # again: nothing may have appeared there while we worked
        for stale in os.listdir(output) if os.path.isdir(output) else ():
            if stale not in written:
                log(f"removed {stale} of the earlier run (this run does not write it)")
        replace_folder(staging, output)
    except OSError as exc:
        raise PrepareError(f"--output {output}: writing the dataset failed ({exc.strerror or exc}); {output} was "
                           "left as it was. Free some space (or fix the permissions) and run again.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.basename(os.path.normpath(os.path.abspath(output))) != name:
        log(f"note: the runner looks for <data_path>/{name}/{name}.inter, but this folder is named "
            f"'{os.path.basename(os.path.normpath(output))}'; rename it to '{name}' or use --output .../{name}")
    log(f"wrote {len(written)} files to {output} (load with data_path={parent}, dataset={name})")
    return PrepareResult(output=output, name=name, n_users=len(user_raw), n_items=len(item_raw),
                         n_interactions=int(len(inter)), split_counts=counts, files=sorted(written),
                         missing={m: [int(i) for i in rows] for m, rows in missing.items()}, summary=summary)
