"""Writing files and folders users rely on without ever leaving half of one behind.

Every results file, checkpoint, converted cache, prepared dataset and search-state file goes through here: it is
written under a temporary name in the destination folder and renamed into place (``os.replace`` is atomic on one
file system), so a kill, a full disk or a crash leaves either the old file or the new one, never a torn one.
"""

import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager, suppress

from recbole_ssr.errors import ConfigError


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
    except BaseException:
        with suppress(OSError):
            os.remove(temporary)
        raise


def write_json(path, payload, **dump_options):
    """``payload`` as JSON (indent 2 unless told otherwise), written atomically."""
    dump_options.setdefault("indent", 2)
    with atomic_write(path) as handle:
        json.dump(payload, handle, **dump_options)


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
