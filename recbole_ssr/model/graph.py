"""The graph toolkit every model uses: construction, normalisation, kNN item graphs, edge sampling and the one
propagation operator.

Graphs are users-first ``[U + I, U + I]`` (user-item), ``[I, I]`` (item-item) or ``[U, U]`` (user-user) torch sparse
tensors, or edge lists ``(rows, cols, values)`` when the values must carry gradients (LATTICE's learned graph, GRCN's
refined graph). Nothing here forms a dense N x N matrix: kNN and co-occurrence graphs are computed in row chunks
(memory O(N·k + chunk·N), never N x N at once).

Construction and normalisation
    :func:`bipartite_edges`, :func:`bipartite_adjacency` (Â = D^-1/2 A D^-1/2, or D^-1 (A [+ I])),
    :func:`sym_normalized` / :func:`sym_normalize_edges` and :func:`rw_normalized`, :func:`user_item_block` (R̂),
    :func:`sparse_max` (SMORE's fusion graph).
kNN item graphs
    :func:`knn_neighbours` (top-k cosine, chunked), :func:`knn_adjacency` (sparse graph from them),
    :func:`knn_edges` (differentiable edge list of learned embeddings); per-modality graphs with the disk cache are
    built by :meth:`recbole_ssr.model.abstract.MultimodalRecommender.knn_item_graph`.
Edge sampling
    :func:`degree_edge_weights`, :func:`sample_edges`, :func:`degree_sensitive_pruning` (FREEDOM).
User co-occurrence graph (DualGNN, DRAGON)
    :func:`cooccurrence_neighbours` (top-k users by shared training items, R Rᵀ in row chunks),
    :func:`sample_user_neighbours` (the per-epoch neighbour lists, padded by sampling, softmax-weighted),
    :func:`neighbour_graph` (the sparse user-user matrix of such lists).
Attention
    :func:`edge_softmax` (softmax over each node's incoming edges; GRCN).
Propagation
    :func:`propagate` (the weight-free graph convolution of LightGCN and every model here), on top of
    :func:`graph_product` and :func:`sparse_product`.

Built graphs are cached on disk by :class:`recbole_ssr.core.cache.GraphCache`.
"""

import os

import numpy as np
import torch
from torch import nn


# -- construction ----------------------------------------------------------------------------------------------------
def bipartite_edges(interaction_csr):
    """(users, items) int64 arrays of the nonzeros of a ``[user_num, item_num]`` CSR matrix."""
    coo = interaction_csr.tocoo()
    return np.asarray(coo.row, dtype=np.int64), np.asarray(coo.col, dtype=np.int64)


# -- normalisation ---------------------------------------------------------------------------------------------------
def sym_normalize_edges(rows, cols, values, n):
    """Values of D^-1/2 A D^-1/2 for the edge list ``A[rows, cols] = values`` with D the row sums (the dense
    ``compute_normalized_laplacian`` of LATTICE/MMRec); nodes whose row sum is not positive get 0.
    Differentiable in ``values``."""
    degree = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    safe = degree.clamp(min=1e-12)
    inv_sqrt = torch.where(degree > 0, safe.pow(-0.5), torch.zeros_like(degree))
    return inv_sqrt[rows] * values * inv_sqrt[cols]


def sym_normalized(rows, cols, n, values=None):
    """D^-1/2 A D^-1/2 as a coalesced sparse COO tensor for the edges (rows, cols) (given in both directions for
    an undirected graph); ``values`` default to 1, D are the row sums, zero-degree nodes keep all-zero rows."""
    rows, cols = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    values = torch.ones(rows.numel()) if values is None else torch.as_tensor(values, dtype=torch.float32)
    normalized = sym_normalize_edges(rows, cols, values, n)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), normalized, (n, n)).coalesce()


def rw_normalized(rows, cols, n, values=None):
    """D^-1 A (row-stochastic) as a coalesced sparse COO tensor; ``values`` default to 1, zero rows stay zero."""
    rows, cols = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    values = torch.ones(rows.numel()) if values is None else torch.as_tensor(values, dtype=torch.float32)
    graph = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n)).coalesce()
    r, _ = graph.indices()
    degree = torch.zeros(n).index_add_(0, r, graph.values())
    inverse = torch.where(degree > 0, 1.0 / degree.clamp(min=1e-12), torch.zeros_like(degree))
    return torch.sparse_coo_tensor(graph.indices(), graph.values() * inverse[r], (n, n)).coalesce()


def bipartite_adjacency(users, items, n_users, n_items, normalization="sym", self_loops=False):
    """Users-first ``[U + I, U + I]`` adjacency of the user-item edges (both directions), coalesced sparse COO.

    ``'sym'``: Â = D^-1/2 (A [+ I]) D^-1/2 (LightGCN, He et al. SIGIR'20, eq. 7; docs/ssr.md notation);
    ``'rw'``: D^-1 (A [+ I]) (row-stochastic, the operator LATTICE's authors feed their LightGCN). D counts the
    self-loop when ``self_loops``.
    """
    users = torch.as_tensor(users, dtype=torch.int64)
    items = torch.as_tensor(items, dtype=torch.int64) + n_users
    n = n_users + n_items
    rows, cols = torch.cat([users, items]), torch.cat([items, users])
    if self_loops:
        nodes = torch.arange(n)
        rows, cols = torch.cat([rows, nodes]), torch.cat([cols, nodes])
    if normalization == "sym":
        return sym_normalized(rows, cols, n)
    if normalization == "rw":
        return rw_normalized(rows, cols, n)
    raise ValueError(f"unknown normalization '{normalization}': use 'sym' or 'rw'")


def user_item_block(norm_adj, n_users, n_items):
    """The [n_users, n_items] block of the (users-first) normalised adjacency: R̂_ui = 1/√(d_u d_i)."""
    norm_adj = norm_adj.coalesce()
    rows, cols = norm_adj.indices()
    keep = (rows < n_users) & (cols >= n_users)
    indices = torch.stack([rows[keep], cols[keep] - n_users])
    return torch.sparse_coo_tensor(indices, norm_adj.values()[keep], (n_users, n_items)).coalesce()


def sparse_max(graphs):
    """Element-wise max over the union of edges of equally shaped sparse graphs (an edge missing from a graph
    does not take part in its max, as SMORE's ``max_pool_fusion`` fills missing entries with -inf)."""
    graphs = [g.coalesce() for g in graphs]
    shape = graphs[0].shape
    indices = torch.cat([g.indices() for g in graphs], dim=1)
    values = torch.cat([g.values() for g in graphs])
    keys = indices[0] * shape[1] + indices[1]
    unique, inverse = torch.unique(keys, return_inverse=True)
    fused = torch.full((unique.numel(),), float("-inf"), dtype=values.dtype, device=values.device)
    fused = fused.scatter_reduce(0, inverse, values, reduce="amax", include_self=True)
    fused_indices = torch.stack([unique // shape[1], unique % shape[1]])
    return torch.sparse_coo_tensor(fused_indices, fused, shape).coalesce()


# -- kNN item graphs -------------------------------------------------------------------------------------------------
def knn_neighbours(features, k, chunk_rows=None, skip=None):
    """Top-k cosine neighbours of every row (itself included, as in LATTICE/FREEDOM).

    ``skip``: rows that take no part (RecBole's padding item 0, whose feature row is zeros): never anyone's
    neighbour (a zero row's cosine 0 would otherwise beat every negative cosine of real neighbours), and their own
    list is themselves (an isolated self-loop). Returns ``(indices [I, k] int64, similarities [I, k] float32)``;
    computed ``chunk_rows`` rows at a time.
    """
    features = torch.as_tensor(features, dtype=torch.float32)
    n = features.shape[0]
    skip = torch.as_tensor([] if skip is None else skip, dtype=torch.int64)
    k = min(int(k), n - skip.numel())
    normalized = torch.nn.functional.normalize(features, dim=1)
    chunk_rows = chunk_rows or max(1, (1 << 24) // max(n, 1))
    indices = torch.empty((n, k), dtype=torch.int64)
    similarities = torch.empty((n, k), dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, n, chunk_rows):
            block = normalized[start:start + chunk_rows] @ normalized.T
            values, columns = torch.topk(block, k, dim=1)
            hit = torch.isin(columns, skip.to(block.device)).any(dim=1)
            if hit.any():  # only rows that picked a skipped one are redone (the others keep topk's tie order)
                redo = block[hit]
                redo[:, skip.to(block.device)] = float("-inf")
                values[hit], columns[hit] = torch.topk(redo, k, dim=1)
            indices[start:start + chunk_rows], similarities[start:start + chunk_rows] = columns.cpu(), values.cpu()
    indices[skip] = skip.unsqueeze(1)
    similarities[skip] = 1.0
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
    if normalization == "rw":
        return rw_normalized(rows, cols, n, vals)
    if normalization is None:
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce()
    raise ValueError(f"unknown normalization '{normalization}': use 'sym', 'rw' or None")


def knn_edges(embeddings, k, chunk_rows=None, skip=None):
    """Top-``k`` cosine neighbours of every row of ``embeddings`` (itself included) as ``(rows, cols, values)``,
    ``values`` the cosine similarities **with their gradient** w.r.t. ``embeddings``.

    Equals ``topk(cos_sim(E), k)`` scattered into a dense I x I matrix (LATTICE's ``build_knn_neighbourhood``),
    including its gradient (top-k selection passes gradient only through the kept values), but the selection runs
    in row chunks without gradient and only the I*k kept similarities are recomputed with autograd:
    memory O(I k d + chunk I) instead of O(I^2). ``skip``: rows left out, as in :func:`knn_neighbours`.
    """
    n = embeddings.shape[0]
    indices, _ = knn_neighbours(embeddings.detach(), k, chunk_rows=chunk_rows, skip=skip)
    indices = indices.to(embeddings.device)
    rows = torch.arange(n, device=embeddings.device).repeat_interleave(indices.shape[1])
    cols = indices.reshape(-1)
    normalized = nn.functional.normalize(embeddings, dim=1)
    values = (normalized[rows] * normalized[cols]).sum(dim=1)
    return rows, cols, values


# -- edge sampling ---------------------------------------------------------------------------------------------------
def degree_edge_weights(users, items, n_users, n_items):
    """1/sqrt(d_u d_i) for every edge (u, i) of a bipartite graph (degrees counted over these edges)."""
    ones = torch.ones(users.numel(), dtype=torch.float32, device=users.device)
    user_degree = torch.zeros(n_users, device=users.device).index_add_(0, users, ones)
    item_degree = torch.zeros(n_items, device=users.device).index_add_(0, items, ones)
    return (user_degree[users] * item_degree[items]).rsqrt()


def sample_edges(n_edges, keep, weights=None, generator=None, device=None):
    """Indices of ``keep`` distinct edges out of ``n_edges``, drawn without replacement with probability
    proportional to ``weights`` (uniformly when ``weights`` is None).

    Weighted sampling uses the Gumbel-top-k trick (top-``keep`` of log w + Gumbel noise), which has exactly the
    distribution of ``torch.multinomial(weights, keep, replacement=False)`` (successive draws ∝ w) without its
    2^24-category limit.
    """
    keep = int(keep)
    if weights is None:
        device = device or "cpu"
        return torch.randperm(n_edges, generator=generator, device=device)[:keep]
    uniform = torch.rand(weights.shape, generator=generator, device=weights.device).clamp_(min=1e-20)
    keys = weights.log() - (-uniform.log()).log()
    return torch.topk(keys, keep, sorted=False).indices


def degree_sensitive_pruning(users, items, n_users, n_items, dropout, weights=None, generator=None):
    """FREEDOM's degree-sensitive edge pruning (Zhou & Shen, MM'23, Sec. 3.2): keep ``int((1 - dropout) |E|)``
    user-item edges sampled without replacement with probability ∝ 1/sqrt(d_u d_i) (edges between high-degree
    nodes, the likely noisy ones, are pruned more often). ``weights`` may pass precomputed
    :func:`degree_edge_weights`. Returns the kept ``(users, items)``."""
    if weights is None:
        weights = degree_edge_weights(users, items, n_users, n_items)
    keep = int(users.numel() * (1.0 - float(dropout)))
    kept = sample_edges(users.numel(), keep, weights=weights, generator=generator)
    return users[kept], items[kept]


# -- user co-occurrence graph ----------------------------------------------------------------------------------------
def cooccurrence_neighbours(interactions, k, chunk_rows=None):
    """For every user, the ``k`` other users sharing the most training items: the top-k of row u of C = R Rᵀ
    (C_uv = number of items both u and v interacted with; the diagonal is left out), R the binary ``[U, I]`` scipy
    CSR training matrix. C is formed ``chunk_rows`` users at a time from the sparse R (memory O(chunk·U)).

    Returns ``(indices [U, k] int64, counts [U, k] float32)``, each row sorted by count, highest first; a user with
    fewer than k co-users has count 0 in the remaining slots (their indices are meaningless). Ties are broken
    arbitrarily, as by the dense top-k of DualGNN's/DRAGON's preprocessing.
    """
    matrix = interactions.tocsr().astype(np.float32)
    matrix.data[:] = 1.0
    n = matrix.shape[0]
    k = min(int(k), max(n - 1, 1))
    transposed = matrix.T.tocsr()
    chunk_rows = chunk_rows or max(1, (1 << 24) // max(n, 1))
    indices = torch.zeros((n, k), dtype=torch.int64)
    counts = torch.zeros((n, k), dtype=torch.float32)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        block = torch.from_numpy((matrix[start:stop] @ transposed).toarray())
        block[torch.arange(stop - start), torch.arange(start, stop)] = 0.0  # a user is not its own neighbour
        values, columns = torch.topk(block, k, dim=1)
        indices[start:stop], counts[start:stop] = columns, values
    return indices, counts


def sample_user_neighbours(indices, counts, generator=None):
    """DualGNN's / DRAGON's neighbour lists for one epoch: ``(slots [U, k] int64, weights [U, k] float32)``.

    Every user gets exactly k neighbour slots (``indices``/``counts`` from :func:`cooccurrence_neighbours`): its
    co-users with a positive count, and - when it has fewer than k (but at least one) - the remaining slots filled
    one after another with a uniformly drawn earlier slot (slot p copies one of the slots 0..p-1, so a neighbour can
    fill several, as the authors' ``topk_sample``; drawn afresh for every call). The weights are
    softmax(counts) over the k slots; users without co-users get weight 0 everywhere. Users with at least k
    co-users keep their top-k in every epoch. :func:`neighbour_graph` turns the lists into a sparse matrix.
    """
    k = indices.shape[1]
    valid = (counts > 0).sum(dim=1)
    slots, slot_counts = indices.clone(), counts.clone()
    for position in range(1, k):
        short = ((valid > 0) & (valid <= position)).nonzero().squeeze(1)
        if short.numel() == 0:
            continue
        draw = (torch.rand(short.numel(), generator=generator, device=indices.device) * position).long()
        slots[short, position] = slots[short, draw]
        slot_counts[short, position] = slot_counts[short, draw]
    return slots, torch.softmax(slot_counts, dim=1) * (valid > 0).unsqueeze(1)


def neighbour_graph(slots, weights):
    """Sparse ``[U, U]`` matrix W of neighbour lists, W_uv = Σ of u's slot weights that hold v (so
    h_u = Σ_v W_uv e_v = Σ_slots weight · e_slot), coalesced COO; zero weights are left out."""
    n, k = slots.shape
    rows = torch.arange(n, device=slots.device).repeat_interleave(k)
    keep = weights.reshape(-1) > 0
    graph = torch.sparse_coo_tensor(torch.stack([rows[keep], slots.reshape(-1)[keep]]), weights.reshape(-1)[keep],
                                    (n, n))
    return graph.coalesce()


# -- attention -------------------------------------------------------------------------------------------------------
def edge_softmax(scores, index, n):
    """softmax of edge ``scores`` over the edges with the same ``index`` (e.g. the target node: each node's incoming
    edges), α_e = exp(s_e) / Σ_{e': index_e' = index_e} exp(s_e'); computed with the per-group maximum subtracted.
    Differentiable in ``scores``."""
    maxima = torch.full((n,), float("-inf"), dtype=scores.dtype, device=scores.device)
    maxima = maxima.scatter_reduce(0, index, scores.detach(), reduce="amax", include_self=True)
    exp = (scores - maxima[index]).exp()
    sums = torch.zeros(n, dtype=scores.dtype, device=scores.device).index_add(0, index, exp)
    return exp / sums[index]


# -- propagation -----------------------------------------------------------------------------------------------------
def graph_product(adjacency, x, transpose=None):
    """A x for a graph A given as a sparse tensor (COO/CSR) or an edge list ``(rows, cols, values)`` (square,
    duplicate edges add up; differentiable in ``values`` too, as a gather + index_add, memory O(|E| d)).
    ``transpose``: Aᵀ as CSR for a constant CSR A; the product then runs through :func:`sparse_product`, whose
    backward reuses it (pass A itself when A is symmetric). Without it: ``torch.sparse.mm``."""
    if isinstance(adjacency, tuple):
        rows, cols, values = adjacency
        out = torch.zeros((x.shape[0], x.shape[1]), dtype=x.dtype, device=x.device)
        return out.index_add(0, rows, values.unsqueeze(1) * x[cols])
    if transpose is not None:
        return sparse_product(adjacency, x, transpose)
    return torch.sparse.mm(adjacency, x)


def propagate(adjacency, x, n_layers, combine="last", transpose=None):
    """Weight-free graph convolution (LightGCN, He et al., SIGIR'20, eqs. 7-8; docs/ssr.md "Backbone"):

        E^0 = x,   E^{l+1} = A E^l  (l = 0..L-1),

    returning ``combine`` = ``'last'``: E^L (the item-item views of FREEDOM, LATTICE, MGCN, SMORE, LGMRec's modality
    graph, SSR's side signal); ``'mean'``: (1/(L+1)) Σ_{l=0..L} E^l (LightGCN's layer combination with α_l =
    1/(L+1)); ``'sum'``: Σ_{l=0..L} E^l (SSR's backbone). ``adjacency`` and ``transpose`` as in
    :func:`graph_product` (Â, a pruned Â, D^-1 (A + I), a kNN item graph, a learned edge list, ...).
    """
    if combine == "last":
        for _ in range(int(n_layers)):
            x = graph_product(adjacency, x, transpose)
        return x
    if combine == "mean":
        layers = [x]
        for _ in range(int(n_layers)):
            x = graph_product(adjacency, x, transpose)
            layers.append(x)
        return torch.stack(layers, dim=0).mean(dim=0)
    if combine == "sum":
        total = x
        for _ in range(int(n_layers)):
            x = graph_product(adjacency, x, transpose)
            total = total + x
        return total
    raise ValueError(f"unknown combine '{combine}': use 'last', 'mean' or 'sum'")


def sparse_to_csr(adjacency):
    """COO -> CSR with 32-bit indices (:func:`int32_csr`): faster sparse x dense products on CPU, gradients flow to
    the dense operand."""
    return int32_csr(adjacency.to_sparse_csr() if adjacency.layout == torch.sparse_coo else adjacency)


def int32_csr(matrix):
    """The same CSR matrix with 32-bit index arrays, when its size allows (else unchanged). MKL's sparse BLAS, which
    runs torch's CSR products on CPU, takes 32-bit indices: torch converts 64-bit ones before every product, 5-10%
    of a product of Â at width 192 (benchmarks/sparse_kernel.md). Products give the same numbers."""
    limit = torch.iinfo(torch.int32).max
    if (matrix.layout != torch.sparse_csr or matrix.crow_indices().dtype == torch.int32
            or matrix._nnz() >= limit or max(matrix.shape) >= limit):
        return matrix
    return torch.sparse_csr_tensor(matrix.crow_indices().to(torch.int32), matrix.col_indices().to(torch.int32),
                                   matrix.values(), matrix.shape)


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
    """Aᵀ of a sparse matrix, as CSR (32-bit indices, :func:`int32_csr`)."""
    coo = matrix.to_sparse_coo() if matrix.layout != torch.sparse_coo else matrix
    return int32_csr(coo.t().coalesce().to_sparse_csr())
