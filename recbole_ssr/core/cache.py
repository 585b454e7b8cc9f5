"""The on-disk caches (MMRec conversions, item cold-start splits, graphs): a cache entry is named by a hash of
everything it was built from (its source files' path, size and modification time, its parameters, a format
version), so an edited source or a changed setting gets a new entry and a stale one is never read. Entries are
published whole (:func:`recbole_ssr.core.safe_io.staged_folder`, :func:`recbole_ssr.core.safe_io.save_with`).

:func:`content_key` and :func:`file_signature` name the entries; :class:`GraphCache` keeps the models' graphs (torch
is imported only when a graph is cached).
"""

import hashlib
import json
import os

from recbole_ssr.core.safe_io import save_with


def file_signature(path):
    """``{"path", "size", "mtime_ns"}`` of a source file (absolute path)."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def content_key(payload, length=12):
    """A short hex digest of ``payload`` (JSON with sorted keys; other objects by their ``str``)."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


class GraphCache:
    """On-disk cache of built graphs, keyed by the dataset, its source files and *every* parameter that shapes
    the graph - two models asking for different graphs can never read each other's file.

    ``cache_dir: ~`` in the config disables it.
    """

    def __init__(self, config, dataset):
        self.root = os.path.join(config["cache_dir"], "graphs") if config["cache_dir"] else None
        files = sorted(info["file"] for info in getattr(dataset, "feature_report", {}).values())
        inter_dir = config["data_path"]
        signature = [config["dataset"], inter_dir, config["eval_protocol"]]
        for path in files + sorted(os.path.join(inter_dir, f) for f in os.listdir(inter_dir)):
            if os.path.isfile(path):
                stat = os.stat(path)
                signature.append([path, stat.st_size, stat.st_mtime_ns])
        self.signature = signature
        self.dataset = config["dataset"]

    def key(self, kind, params):
        return content_key({"data": self.signature, "kind": kind, "params": params}, length=16)

    def get_or_build(self, kind, params, build):
        """Return ``build()``'s tensor(s), loading them from disk when an identical graph was built before."""
        import torch

        if self.root is None:
            return build()
        path = os.path.join(self.root, self.dataset, f"{kind}-{self.key(kind, params)}.pt")
        if os.path.isfile(path):
            return torch.load(path, weights_only=True)
        result = build()
        save_with(path, lambda handle: torch.save(result, handle))
        return result
