"""Graph building blocks shared by every model: user-item adjacency, kNN item-item graphs, and their disk cache.

Nothing here forms a dense N x N (users + items) matrix. kNN graphs are computed in row chunks, so memory is
O(I * k + chunk * I), never I x I at once.
"""

import hashlib
import json
import os

import numpy as np
import torch


def bipartite_edges(interaction_csr):
    """(users, items) int64 arrays of the nonzeros of a ``[user_num, item_num]`` CSR matrix."""
    coo = interaction_csr.tocoo()
    return np.asarray(coo.row, dtype=np.int64), np.asarray(coo.col, dtype=np.int64)


def sym_normalized(rows, cols, n, values=None):
    """D^-1/2 A D^-1/2 as a coalesced sparse COO tensor, for edges (rows, cols) (given in both directions).

    ``values`` default to 1. Degrees are the row sums; zero-degree nodes keep all-zero rows.
    """
    rows, cols = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    if values is None:
        values = torch.ones(rows.numel(), dtype=torch.float32)
    values = torch.as_tensor(values, dtype=torch.float32)
    degree = torch.zeros(n, dtype=torch.float32).index_add_(0, rows, values)
    inv_sqrt = degree.pow(-0.5)
    inv_sqrt[torch.isinf(inv_sqrt)] = 0.0
    normalized = inv_sqrt[rows] * values * inv_sqrt[cols]
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), normalized, (n, n)).coalesce()


def normalized_adjacency(users, items, n_users, n_items, device=None):
    """Symmetric-normalised bipartite adjacency Â = D^-1/2 A D^-1/2 over N = n_users + n_items nodes
    (users first, then items), as a torch sparse COO tensor (LightGCN eq. 7 / docs/ssr.md notation)."""
    users = torch.as_tensor(users, dtype=torch.int64)
    items = torch.as_tensor(items, dtype=torch.int64) + n_users
    adjacency = sym_normalized(torch.cat([users, items]), torch.cat([items, users]), n_users + n_items)
    return adjacency.to(device) if device is not None else adjacency


def knn_neighbours(features, k, chunk_rows=None):
    """Top-k cosine neighbours of every row (itself included, as in LATTICE/FREEDOM).

    Returns ``(indices [I, k] int64, similarities [I, k] float32)``; computed ``chunk_rows`` rows at a time.
    """
    features = torch.as_tensor(features, dtype=torch.float32)
    n = features.shape[0]
    k = min(int(k), n)
    normalized = torch.nn.functional.normalize(features, dim=1)
    chunk_rows = chunk_rows or max(1, (1 << 24) // max(n, 1))
    indices = torch.empty((n, k), dtype=torch.int64)
    similarities = torch.empty((n, k), dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, n, chunk_rows):
            block = normalized[start:start + chunk_rows] @ normalized.T
            values, columns = torch.topk(block, k, dim=1)
            indices[start:start + chunk_rows], similarities[start:start + chunk_rows] = columns.cpu(), values.cpu()
    return indices, similarities


def knn_adjacency(indices, n, values=None, normalization="sym"):
    """Sparse I x I kNN graph from ``knn_neighbours`` indices: binary (``values=None``) or weighted edges,
    normalised ``'sym'`` (D^-1/2 A D^-1/2), ``'rw'`` (D^-1 A) or ``None``."""
    k = indices.shape[1]
    rows = torch.arange(n).repeat_interleave(k)
    cols = indices.reshape(-1)
    vals = torch.ones(rows.numel()) if values is None else values.reshape(-1).float()
    if normalization == "sym":
        return sym_normalized(rows, cols, n, vals)
    graph = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce()
    if normalization == "rw":
        r, c = graph.indices()
        degree = torch.zeros(n).index_add_(0, r, graph.values())
        inv = torch.where(degree > 0, 1.0 / degree, torch.zeros_like(degree))
        return torch.sparse_coo_tensor(graph.indices(), graph.values() * inv[r], (n, n)).coalesce()
    if normalization is None:
        return graph
    raise ValueError(f"unknown normalization '{normalization}': use 'sym', 'rw' or None")


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
        blob = json.dumps({"data": self.signature, "kind": kind, "params": params}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def get_or_build(self, kind, params, build):
        """Return ``build()``'s tensor(s), loading them from disk when an identical graph was built before."""
        if self.root is None:
            return build()
        path = os.path.join(self.root, self.dataset, f"{kind}-{self.key(kind, params)}.pt")
        if os.path.isfile(path):
            return torch.load(path, weights_only=True)
        result = build()
        from recbole_ssr.safe_io import save_with

        save_with(path, lambda handle: torch.save(result, handle))
        return result


def sparse_to_csr(adjacency):
    """COO -> CSR (faster sparse x dense products on CPU; gradients flow to the dense operand)."""
    return adjacency.to_sparse_csr() if adjacency.layout == torch.sparse_coo else adjacency


class _FixedSparseProduct(torch.autograd.Function):
    """Y = A X for a constant sparse CSR A; dL/dX = Aᵀ dL/dY with Aᵀ given once (no transposition per step)."""

    @staticmethod
    def forward(ctx, x, matrix, transpose):
        ctx.transpose = transpose
        out = x.new_empty((matrix.shape[0], x.shape[1]))
        return torch.addmm(out, matrix, x, beta=0.0, out=out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        out = grad.new_empty((ctx.transpose.shape[0], grad.shape[1]))
        return torch.addmm(out, ctx.transpose, grad, beta=0.0, out=out), None, None


def sparse_product(matrix, x, transpose=None):
    """A X for a constant sparse CSR matrix A (a graph operator, not trained) and a dense X that may need
    gradients. ``transpose`` is Aᵀ as CSR (build it once with :func:`csr_transpose`); None means A is symmetric
    (e.g. Â = D^-1/2 A D^-1/2). Same numbers as ``torch.sparse.mm(A, X)``; its backward reuses the given Aᵀ
    instead of transposing A in every step."""
    return _FixedSparseProduct.apply(x, matrix, matrix if transpose is None else transpose)


def csr_transpose(matrix):
    """Aᵀ of a sparse matrix, as CSR."""
    coo = matrix.to_sparse_coo() if matrix.layout != torch.sparse_coo else matrix
    return coo.t().coalesce().to_sparse_csr()
