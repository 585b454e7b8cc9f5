"""Per-user test metrics, keyed by the user's original token, and the sidecar file that keeps them beside a run.

The significance tests (:mod:`recbole_ssr.experiments.significance`) pair users across models, so every run keeps each
evaluated user's values; tables merged from runs made on other machines or earlier are tested the same way because
users are keyed by their token in the dataset files (internal ids depend on the order RecBole read the data).

**Definition.** RecBole's full-sort collector keeps, per evaluated user ``u``, the hit flags ``h(u, 1..K)`` of the
top-K list and the number ``P(u)`` of the user's test items (its ``rec.topk`` rows); each metric object's
``metric_info`` turns them into per-user values, and RecBole's reported metric is their plain mean over the users of
the test loader::

    Recall@K(u) = sum_{r<=K} h(u, r) / P(u)
    NDCG@K(u)   = sum_{r<=K} h(u, r) / log2(r + 1)  /  sum_{r<=min(K, P(u))} 1 / log2(r + 1)
    Metric@K    = mean_u Metric@K(u)      (RecBole then rounds to ``metric_decimal_place``)

The values here are RecBole's own (its metric classes on the same rows), so their mean is the run's test metric.
Users without a test item are not in the test loader (under both protocols) and have no value. Every configured
metric that needs only the top-k list is kept (Recall and NDCG, and Hit, Precision, MRR, MAP when configured), at
every K of ``topk``.

**In memory** (what a run returns; plain lists, so it travels through processes and Ray)::

    {"users": ["u12", "u7", ...], "metrics": {"recall@20": [0.5, 0.0, ...], "ndcg@20": [...], ...}}

**Sidecar file** ``<results stem>.users.json.gz`` (:func:`sidecar_path`; e.g. ``bench.json`` and its progress file
``bench.runs.jsonl`` -> ``bench.users.json.gz``): gzip-compressed JSON, written atomically::

    {"format": "recbole_ssr.per_user", "version": 1,
     "runs": [{"model": "SSR", "seed": 999, "dataset": "tiktok", "run_id": "3f2a...", "users": [...],
               "metrics": {...}}, ...]}

``run_id`` is the run's own ``run_id`` in its results (a random id every run gets): a record pairs with the run of
the same id only (:func:`entries_for_runs`), so a sidecar that keeps records of several runs of one model and seed
(a batch run again with another configuration) never hands one run's users to another. Records are only added, as
the runs log is only appended to.

JSON floats are written in Python's shortest round-trip form, so the values read back are bit-identical.

This module imports only :mod:`recbole_ssr.core.errors` and :mod:`recbole_ssr.core.safe_io` (torch and RecBole lazily).
"""

import gzip
import inspect
import json
import os

import numpy as np

from recbole_ssr.core.errors import ConfigError, RecboleSSRError
from recbole_ssr.core.safe_io import atomic_write, finite_json

FORMAT = "recbole_ssr.per_user"
VERSION = 1
SUFFIX = ".users.json.gz"


def values_from_rankings(metric_objects, rec_topk):
    """``{"recall@20": array [U], ...}``: RecBole's per-user values of every metric object at each of its K, from
    ``rec_topk`` ([U, max_k + 1]: the hit flags of the top-k list, then the number of test items)."""
    from recbole.evaluator.collector import DataStruct

    struct = DataStruct()
    struct.set("rec.topk", rec_topk)
    values = {}
    for metric in metric_objects:
        pos_index, pos_len = metric.used_info(struct)
        wanted = len(inspect.signature(metric.metric_info).parameters)  # Hit, MRR, Precision: (pos_index) only
        per_user = metric.metric_info(*(pos_index, pos_len)[:wanted])  # [U, max_k]: metric@1 .. metric@max_k
        name = type(metric).__name__.lower()
        for k in metric.topk:
            values[f"{name}@{k}"] = np.asarray(per_user[:, k - 1], dtype=np.float64)
    return values


def per_user_entry(tokens, values):
    """The in-memory form (module doc) of user ``tokens`` [U] and ``values`` ``{metric: array [U]}``."""
    return {"users": [str(t) for t in tokens], "metrics": {m: [float(v) for v in a] for m, a in values.items()}}


def means(entry):
    """``{metric: mean over the entry's users}``: the run's test metrics before RecBole's rounding."""
    return {m: float(np.mean(v)) if len(v) else float("nan") for m, v in entry["metrics"].items()}


# ---------------------------------------------------------------------------------------------------------------
# the sidecar file
# ---------------------------------------------------------------------------------------------------------------
def sidecar_path(results_path):
    """``<stem>.users.json.gz`` beside a results file; the stem drops ``.json`` / ``.jsonl`` and a trailing
    ``.runs`` (a side-by-side progress file shares its results file's sidecar)."""
    stem = str(results_path)
    for ending in (".jsonl", ".json"):
        if stem.endswith(ending):
            stem = stem[:-len(ending)]
            break
    if stem.endswith(".runs"):
        stem = stem[:-len(".runs")]
    return stem + SUFFIX


def run_record(model, seed, dataset, entry, run_id=None):
    """One run's record in a sidecar: its identity (as in its results) and its per-user entry."""
    record = {"model": str(model), "seed": None if seed is None else int(seed), "dataset": str(dataset)}
    if run_id is not None:
        record["run_id"] = str(run_id)
    record.update(users=list(entry["users"]), metrics={m: list(v) for m, v in entry["metrics"].items()})
    return record


def write_sidecar(path, records):
    """Write ``records`` (:func:`run_record`) as the sidecar ``path``, atomically (a reader sees the old file or the
    new one)."""
    payload = json.dumps(finite_json({"format": FORMAT, "version": VERSION, "runs": list(records)}),
                         allow_nan=False).encode("utf-8")  # strict JSON, as every file of the project
    with atomic_write(path, "wb") as handle:
        with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as zipped:
            zipped.write(payload)


def add_to_sidecar(path, records, replace_unreadable=False):
    """Add ``records`` to the sidecar ``path`` (created if absent); a record of the same (model, seed, dataset,
    run_id) is replaced. The whole file is rewritten atomically, so a run kept as soon as it finishes is never torn.
    A file there that is not a readable sidecar is an error, or with ``replace_unreadable`` (``--overwrite``)
    replaced."""
    records = list(records)
    new_keys = {_key(r) for r in records}
    kept = []
    if os.path.lexists(path):
        try:
            kept = [r for r in read_sidecar(path) if _key(r) not in new_keys]
        except RecboleSSRError:
            if not replace_unreadable:
                raise
    write_sidecar(path, kept + records)


def _key(record):
    return record["model"], record["seed"], record["dataset"], record.get("run_id")


def read_sidecar(path):
    """The run records of the sidecar ``path``; a :class:`RecboleSSRError` naming the file when it is not one."""
    try:
        with gzip.open(path, "rb") as handle:
            payload = json.loads(handle.read().decode("utf-8"))
    except (OSError, EOFError, ValueError) as exc:
        raise RecboleSSRError(f"{path}: cannot read the per-user metrics ({exc}); it should be the gzip JSON a run "
                              f"writes beside its results (delete it to leave those runs out of the tests).") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("runs"), list):
        raise RecboleSSRError(f"{path}: not a per-user metrics file of recbole_ssr (expected {{\"format\": "
                              f"\"{FORMAT}\", \"runs\": [...]}}).")
    if payload.get("version") != VERSION:
        raise RecboleSSRError(f"{path}: per-user metrics format version {payload.get('version')!r}, this version "
                              f"reads {VERSION}; upgrade recbole_ssr.")
    for index, record in enumerate(payload["runs"]):
        _check_record(path, index, record)
    return payload["runs"]


def _check_record(path, index, record):
    fields = ("model", "seed", "dataset", "users", "metrics")
    if not isinstance(record, dict) or any(f not in record for f in fields) or not isinstance(record["metrics"], dict):
        raise RecboleSSRError(f"{path}: run {index} lacks one of {', '.join(fields)}.")
    lengths = {m: len(v) for m, v in record["metrics"].items() if len(v) != len(record["users"])}
    if lengths:
        raise RecboleSSRError(f"{path}: run {index} ({record['model']}, seed {record['seed']}) has "
                              f"{len(record['users'])} users but {lengths} values; the file is damaged.")


def check_may_replace_sidecar(path, overwrite=False):
    """The sidecar ``path`` may be written: absent, a per-user metrics file of this project, or ``overwrite``.
    Checked before anything is trained."""
    if not os.path.lexists(path) or overwrite:
        return
    try:
        read_sidecar(path)
    except RecboleSSRError as exc:
        raise ConfigError(f"{exc} It would be replaced, so nothing was run: choose another --results name, or pass "
                          "--overwrite to replace it.") from None


def entries_for_runs(runs, paths):
    """The per-user entries of the successful ``runs`` (results records), from the sidecar files ``paths`` (absent
    ones skipped). Returns ``({(model, seed): entry}, [the matched records])``.

    A run with a ``run_id`` pairs only with the record of that id; a run without one (made before runs had ids)
    with a record without one. A record's dataset must be the run's. The first match wins.
    """
    records = []
    for path in dict.fromkeys(paths):
        if os.path.isfile(path):
            records += read_sidecar(path)
    by_run = {}
    for record in records:
        by_run.setdefault((record["model"], record["seed"], record.get("run_id")), []).append(record)
    entries, matched = {}, []
    for run in runs:
        if run.get("status", "ok") != "ok" or (run["model"], run.get("seed")) in entries:
            continue
        for record in by_run.get((run["model"], run.get("seed"), run.get("run_id")), []):
            if run.get("dataset") is None or record["dataset"] == str(run["dataset"]):
                entries[(run["model"], run.get("seed"))] = {"users": record["users"], "metrics": record["metrics"]}
                matched.append(record)
                break
    return entries, matched


def load_sidecars(results_paths):
    """``({(model, seed): entry}, [results files without a sidecar])`` for the sidecars beside ``results_paths``;
    the first record of a (model, seed) wins."""
    found, missing = {}, []
    for results_path in results_paths:
        path = sidecar_path(results_path)
        if not os.path.isfile(path):
            missing.append(results_path)
            continue
        for record in read_sidecar(path):
            found.setdefault((record["model"], record["seed"]),
                             {"users": record["users"], "metrics": record["metrics"]})
    return found, missing
