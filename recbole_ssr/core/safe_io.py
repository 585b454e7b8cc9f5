"""Writing files and folders users rely on without ever leaving half of one behind, and never replacing one this
project did not write (docs/errors.md, "Files are never lost").

* Every results file, checkpoint, converted cache, prepared dataset and search-state file goes through here: it is
  written under a temporary name in the destination folder and renamed into place (``os.replace`` is atomic on one
  file system), so a kill, a full disk or a crash leaves either the old file or the new one, never a torn one. A
  write that fails names the file it was writing.
* JSON is written by :func:`write_json` and :func:`append_jsonl` only: strict JSON, never ``NaN``/``Infinity``
  (such a value becomes ``null`` with ``<key>_null_reason`` beside it, :func:`finite_json`).
* Results JSON carries a provenance marker (``written_by``: this program, the kind of output, model(s), dataset;
  :func:`stamped`). :func:`check_may_replace` refuses, before any training, to replace a file that is not this
  project's output of the same kind for the same model(s) and dataset (``--overwrite`` allows it), and always
  refuses to replace an input of the run.
* :func:`exclusive_lock`: one writer per results path (a second batch on the same path is refused).
"""

import errno
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager, suppress

from recbole_ssr.core.errors import ConfigError, RecboleSSRError

PROGRAM = "recbole-ssr"
PROVENANCE_KEY = "written_by"


def _temporary_name(path):
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_write(path, mode="w", encoding="utf-8", newline=None):
    """``with atomic_write(path) as handle:`` write to ``handle``; ``path`` appears only once the block succeeds."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = _temporary_name(path)
    binary = "b" in mode
    try:
        with open(temporary, "xb" if binary else "x", encoding=None if binary else encoding,
                  newline=None if binary else newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with suppress(OSError):
            os.remove(temporary)
        if exc.filename in (None, temporary):  # say which file could not be written, not our temporary name
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from None
        raise
    except BaseException:
        with suppress(OSError):
            os.remove(temporary)
        raise


def _null_reason(value):
    if math.isnan(value):
        return "was NaN (not a number): nothing to compute it from (e.g. no successful run), or a diverged computation"
    return f"was {'-' if value < 0 else ''}Infinity"


def finite_json(value):
    """``value`` with every NaN/Infinity float replaced by None; in a mapping, the key ``<key>_null_reason`` beside
    it says what the value was (for a list, beside the list: which items). Strict JSON parsers reject NaN."""
    cleaned, _ = _finite(value)
    return cleaned


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None, _null_reason(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key], reason = _finite(item)
            if reason is not None and f"{key}_null_reason" not in value:
                out[f"{key}_null_reason"] = reason
        return out, None
    if isinstance(value, (list, tuple)):
        items, reasons = [], []
        for index, item in enumerate(value):
            cleaned, reason = _finite(item)
            items.append(cleaned)
            if reason is not None:
                reasons.append(f"item {index} {reason}")
        return items, ("; ".join(reasons) or None)
    return value, None


def write_json(path, payload, **dump_options):
    """``payload`` as strict JSON (indent 2 unless told otherwise; NaN/Infinity as null, :func:`finite_json`),
    written atomically."""
    dump_options.setdefault("indent", 2)
    with atomic_write(path) as handle:
        json.dump(finite_json(payload), handle, allow_nan=False, **dump_options)


def append_jsonl(path, record):
    """One strict JSON line appended to a progress log (a run kept as soon as it finishes). A log whose last line
    was torn (a kill mid-write) first gets its line ended, so the new record stays a line of its own."""
    line = json.dumps(finite_json(record), default=str, allow_nan=False) + "\n"
    try:
        with open(path, "ab+") as handle:
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from None


def read_jsonl(path, warn=None):
    """The records of a JSON-lines log, skipping every line that is not a complete JSON value (a batch killed while
    writing it) with a warning that gives its line number (``warn(text)``, default: stderr). Returns
    ``(records, skipped line numbers)``."""
    warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    records, skipped = [], []
    with open(path, "r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                skipped.append(number)
                warn(f"warning: {path} line {number} is not a complete JSON record (a run killed while it was being "
                     "written?); it is skipped, the other lines are read.")
    return records, skipped


def write_bytes(path, payload):
    with atomic_write(path, "wb") as handle:
        handle.write(payload)


def save_with(path, save):
    """Atomically write a file produced by ``save(file_object)`` (e.g. ``lambda f: torch.save(state, f)``)."""
    with atomic_write(path, "wb") as handle:
        save(handle)


def new_staging_folder(target):
    """An empty folder beside ``target`` (same file system, so it can be renamed onto it)."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(os.path.abspath(target))}.{os.getpid()}-"
                                   f"{uuid.uuid4().hex[:8]}.staging")
    os.mkdir(staging)
    return staging


def replace_folder(staging, target):
    """Put the finished folder ``staging`` at ``target`` as a whole.

    ``target`` absent or empty: one rename. Otherwise the old folder is first renamed aside, the new one renamed in,
    and only then the old one deleted; if the second rename fails the old folder is put back.
    """
    if not os.path.isdir(target) or not os.listdir(target):
        if os.path.isdir(target):
            os.rmdir(target)
        os.replace(staging, target)
        return
    aside = f"{staging}.old"
    os.replace(target, aside)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def check_writable_folder(path, what, fix="pass a folder you can write to"):
    """Create ``path`` if needed and prove a file can be written in it; a :class:`ConfigError` naming ``what``
    (the key or option) otherwise. Called before training so that no finished run is lost to a bad location."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{what} {path} is a file, but a folder is expected there; {fix}.")
    try:
        os.makedirs(path, exist_ok=True)
        probe = _temporary_name(os.path.join(path, "write-test"))
        with open(probe, "x"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be written ({exc.strerror or exc}); {fix}.") from None


def check_writable_file(path, what):
    """``path`` can be (re)written: not a folder, and its folder is writable."""
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path} is a folder, but a file path is expected (e.g. {os.path.join(path, 'results.json')}).")
    check_writable_folder(os.path.dirname(os.path.abspath(path)), f"{what} {path}: its folder")


def new_stamped_folder(root, prefix, what="folder"):
    """``<root>/<prefix>-<YYYYmmdd-HHMMSS>[-n]``, created now and never reused (a second one in the same second gets
    ``-2``, ``-3``, ...): every search, benchmark and analysis writes to a folder of its own."""
    os.makedirs(root, exist_ok=True)
    base = os.path.join(root, f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    for n in range(1, 1000):
        folder = base if n == 1 else f"{base}-{n}"
        try:
            os.makedirs(folder)
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"cannot create a new {what} under {root}.")


def publish_folder(staging, target, marker=None):
    """Rename the finished folder ``staging`` to ``target`` (absent or empty) of a content-keyed cache. When
    another process published the same content first (``target`` holds its ``marker`` file), keep theirs and drop
    ours; any other failure is raised. Either way ``target`` is whole afterwards."""
    try:
        os.replace(staging, target)
    except OSError:
        if marker is not None and not os.path.isfile(os.path.join(target, marker)):
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another process finished the same content first


@contextmanager
def staged_folder(target, marker=None):
    """``with staged_folder(target) as staging:`` write the folder's files into ``staging`` (beside ``target``, on
    the same file system); it is published at ``target`` (:func:`publish_folder`) when the block succeeds and
    removed when it fails, so a reader never sees half a folder."""
    staging = new_staging_folder(target)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_folder(staging, target, marker)


# ------------------------------------------------------------------------------------------ what a file is, who wrote it
RESULTS_SUFFIX = ".json"


def check_results_name(path, what="--results"):
    """A results path is a non-empty file name ending in ``.json`` in every mode (side-by-side and tuned runs
    derive ``<stem>.csv`` and ``<stem>.runs.jsonl`` from it)."""
    if path is None:
        return
    if not str(path).strip():
        raise ConfigError(f"{what} is empty: give a file name ending in .json (e.g. {what}=results.json), or leave "
                          f"{what} out.")
    if os.path.isdir(path):
        check_writable_file(path, what)  # names the folder
    if not str(path).endswith(RESULTS_SUFFIX):
        stem = str(path)[:-len(os.path.splitext(str(path))[1])] if os.path.splitext(str(path))[1] else str(path)
        raise ConfigError(f"{what}={path}: a results file name ends in .json (e.g. {what}={stem}.json); side-by-side "
                          "and tuned runs write <name>.csv and <name>.runs.jsonl beside it.")


def stamped(payload, kind, models, dataset):
    """``payload`` with the provenance marker first: ``written_by: {program, kind, models, dataset}``."""
    marker = {"program": PROGRAM, "kind": kind, "models": sorted(str(m) for m in models), "dataset": dataset}
    return {PROVENANCE_KEY: marker, **{k: v for k, v in payload.items() if k != PROVENANCE_KEY}}


def results_identity(payload):
    """``(kind, models, dataset)`` of a results file this project wrote: its marker, or (files of earlier versions,
    without one) the layout of each kind of output; None for anything else."""
    if not isinstance(payload, dict):
        return None
    marker = payload.get(PROVENANCE_KEY)
    if isinstance(marker, dict) and marker.get("program") == PROGRAM:
        return marker.get("kind"), tuple(sorted(marker.get("models") or ())), marker.get("dataset")
    dataset = payload.get("dataset")
    runs = payload.get("runs") if isinstance(payload.get("runs"), list) else []
    run_models = tuple(sorted({str(r.get("model")) for r in runs if isinstance(r, dict) and r.get("model")}))
    if isinstance(payload.get("analysis"), str):
        return f"{payload['analysis']} analysis", run_models, dataset or (runs[0].get("dataset") if runs else None)
    if "benchmark_dir" in payload and isinstance(payload.get("models"), list):
        return "tuned benchmark", tuple(sorted(payload["models"])), dataset
    if "best" in payload and "trials_csv" in payload and payload.get("model"):
        return "search", (str(payload["model"]),), dataset
    if isinstance(payload.get("models"), list) and "runs" in payload:
        return "side-by-side", tuple(sorted(payload["models"])), dataset
    if payload.get("model") and "test_result" in payload:
        return "run", (str(payload["model"]),), dataset
    if "chosen" in payload and "summary" in payload and runs:
        return "eval_band_scale", ("SSR",), runs[0].get("dataset")
    return None


def _describe(identity):
    if identity is None:
        return "a file recbole-ssr did not write (or an unreadable one)"
    kind, models, dataset = identity
    return f"the {kind} results of {', '.join(models) or '?'} on {dataset}"


def check_may_replace(path, kind, models, dataset, what="--results", overwrite=False, inputs=None):
    """Refuse (before any training) to replace ``path`` unless it is absent or this project's output of the same
    ``kind`` for the same ``models`` and ``dataset`` (a re-run replaces its own file). ``--overwrite`` allows any
    other file; an input of the run (``inputs``: {path: what it is}) is never replaced."""
    if not path or not os.path.lexists(path) or os.path.isdir(path):
        return
    real = os.path.realpath(path)
    for given, role in (inputs or {}).items():
        if given and os.path.realpath(given) == real:
            raise ConfigError(f"{what} {path} is also {role} of this run; writing the results there would destroy it. "
                              f"Choose another file name (e.g. {what}=results.json).")
    if overwrite:
        return
    try:
        with open(path, "r", encoding="utf-8") as handle:
            found = results_identity(json.load(handle))
    except (OSError, ValueError, UnicodeDecodeError):
        found = None
    mine = (kind, tuple(sorted(str(m) for m in models)), dataset)
    if found == mine:
        return
    raise ConfigError(f"{what} {path} already exists and holds {_describe(found)}; this {kind} of "
                      f"{', '.join(mine[1])} on {dataset} would replace it, so nothing was run. Choose another file "
                      "name, or pass --overwrite to replace it.")


def check_may_replace_table(path, header_start, what, overwrite=False):
    """A CSV table beside a results JSON: replaceable when absent, when its header starts with ``header_start``
    (a table this project wrote), or with ``--overwrite``."""
    if not os.path.lexists(path) or overwrite:
        return
    try:
        with open(path, "r", encoding="utf-8") as handle:
            header = handle.readline().strip()
    except (OSError, UnicodeDecodeError):
        header = ""
    if not header.startswith(header_start):
        raise ConfigError(f"{what} {path} already exists and is not a table recbole-ssr wrote; it would be replaced, so "
                          "nothing was run. Choose another --results name, or pass --overwrite to replace it.")


def check_appendable_log(path, what):
    """A runs log is only ever appended to: it must be absent, empty, or a log of runs this project wrote (its
    first complete line is a run record)."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path} is a folder, but the runs log (a file) is written there; choose another "
                          "--results name.")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    first = json.loads(line)
                except ValueError:
                    continue
                if isinstance(first, dict) and "model" in first and "status" in first:
                    return
                break
            else:
                return  # empty, or nothing but torn lines
    except (OSError, UnicodeDecodeError):
        pass
    raise ConfigError(f"{what} {path} exists but is not a runs log recbole-ssr wrote (runs are appended to it); move "
                      "it away or choose another --results name.")


# --------------------------------------------------------------------------------------------------------- one writer
def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def exclusive_lock(path, what, warn=None):
    """``with exclusive_lock(path, what):`` holds ``path`` (created with O_EXCL, holding host and pid) while the
    block runs. A lock of a running process refuses with a :class:`ConfigError`; a stale one (its process on this
    host is gone) is taken over with a warning."""
    warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}\n"
    for attempt in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path, "r", encoding="utf-8") as handle:
                    host, _, pid = handle.read().strip().partition(" ")
                pid = int(pid)
            except (OSError, ValueError):
                host, pid = "", None
            if attempt == 0 and pid is not None and host == socket.gethostname() and not _pid_alive(pid):
                warn(f"warning: {path} was left by process {pid}, which is no longer running (killed?); taking it "
                     "over.")
                with suppress(FileNotFoundError):
                    os.remove(path)
                continue
            holder = f"process {pid} on {host}" if pid is not None else "another process"
            raise ConfigError(f"{what} is in use by {holder} (lock file {path}): two batches writing the same results "
                              "would mix their runs. Wait for it to finish, or choose another --results name; if no "
                              "such batch runs any more, delete the lock file.") from None
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(me)
        break
    try:
        yield path
    finally:
        with suppress(OSError):
            os.remove(path)


# ------------------------------------------------------------------------------------------------- a failed write
def rescued(payload, path, exc, what="--results", summary=""):
    """After writing ``payload`` to ``path`` failed with ``exc`` (a full disk, a read-only folder): write it to the
    temporary folder instead and return the :class:`RecboleSSRError` to raise, naming ``path``, the reason, where
    the finished results are kept and ``summary`` (e.g. the test metrics, which survive even when nothing can be
    written)."""
    reason = exc.strerror or str(exc)
    rescue = os.path.join(tempfile.gettempdir(), f"recbole-ssr-rescued-{time.strftime('%Y%m%d-%H%M%S')}-"
                                                 f"{os.getpid()}-{os.path.basename(path)}")
    try:
        write_json(rescue, payload)
        kept = f"the finished results are kept in {rescue}"
    except OSError:
        kept = f"they could not be written to {tempfile.gettempdir()} either"
    hint = " Free some space, then copy them back." if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    summary = f" {summary}" if summary else ""
    return RecboleSSRError(f"writing {what} {path} failed ({reason}); {kept}.{summary}{hint}")


def write_json_or_rescue(path, payload, what="--results", summary=""):
    """``write_json(path, payload)``; when the machine refuses, :func:`rescued` keeps the payload and the error
    names the file."""
    try:
        write_json(path, payload)
        return path
    except OSError as exc:
        raise rescued(payload, path, exc, what, summary) from None
