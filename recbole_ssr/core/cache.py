"""Content keys of the on-disk caches (MMRec conversions, item cold-start splits, graphs): a cache entry is named by
a hash of everything it was built from (its source files' path, size and modification time, its parameters, a
format version), so an edited source or a changed setting gets a new entry and a stale one is never read.
Entries are published whole (:func:`recbole_ssr.core.safe_io.staged_folder`, :func:`recbole_ssr.core.safe_io.save_with`)."""

import hashlib
import json
import os


def file_signature(path):
    """``{"path", "size", "mtime_ns"}`` of a source file (absolute path)."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def content_key(payload, length=12):
    """A short hex digest of ``payload`` (JSON with sorted keys; other objects by their ``str``)."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]
