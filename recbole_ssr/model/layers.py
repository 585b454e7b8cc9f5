"""Building blocks shared by the graph-based multimodal baselines (LATTICE, FREEDOM, BM3, MGCN, LGMRec, SMORE).

Graphs are kept as sparse tensors or as edge lists ``(rows, cols, values)``; nothing here forms a dense N x N or
I x I matrix.

Propagation
    * :func:`lightgcn_propagate` - LightGCN over a users-first adjacency, mean of the layer outputs 0..L.
    * :func:`edge_propagate` - ``A @ x`` for an edge-list graph whose values may carry gradients (learned graphs).
Graph construction
    * :func:`bipartite_adjacency` - the user-item adjacency, ``'sym'`` D^-1/2 A D^-1/2 or ``'rw'`` D^-1 A, with
      optional self-loops (LATTICE's authors use D^-1 (A + I)).
    * :func:`sym_normalize_edges` - D^-1/2 A D^-1/2 values of an edge list (differentiable in the values).
    * :func:`knn_edges` - top-k cosine neighbours of learned embeddings as an edge list whose values (the cosine
      similarities) keep their gradient - LATTICE's learned graph without the dense I x I similarity matrix.
    * :func:`weighted_knn_item_graph` - the frozen kNN item graph of a modality with cosine-weighted edges (LATTICE's
      "original" graph); shares the disk-cache entry of ``MultimodalRecommender.knn_item_graph`` (binary edges).
Edge sampling
    * :func:`degree_edge_weights` - 1/sqrt(d_u d_i) for every user-item edge.
    * :func:`sample_edges` - ``keep`` edge indices without replacement, proportional to weights (uniform if none).
    * :func:`degree_sensitive_pruning` - FREEDOM's pruning: keep (1 - dropout)|E| edges drawn ~ 1/sqrt(d_u d_i).
MGCN / LGMRec / SMORE
    * :func:`propagate` - Â^L E, last layer only (item-item views, LGMRec's modality graph embedding).
    * :func:`user_item_block` - the user->item block R̂ = D_u^-1/2 R D_i^-1/2 of Â ("normalised R").
    * :func:`sparse_max` - element-wise max of sparse graphs over the union of their edges (SMORE's fusion graph).
    * :func:`per_modality` - a scalar or ``{name: value, default: value}`` config entry resolved per modality.
Features
    * :class:`FeatureTables` - raw modality features as trainable parameters (the authors'
      ``nn.Embedding.from_pretrained(freeze=False)``) or frozen buffers.
"""

import torch
from torch import nn

from recbole_ssr.errors import ConfigError
from recbole_ssr.model.graph import knn_adjacency, knn_neighbours, sym_normalized


# -- propagation -----------------------------------------------------------------------------------------------------
def lightgcn_propagate(adjacency, user_embeddings, item_embeddings, n_layers):
    """LightGCN (He et al., SIGIR'20, eqs. 7-8): E^{l+1} = Â E^l over ``E^0 = [users; items]``; returns the mean
    of E^0..E^L split back into ``(users [U, d], items [I, d])``. ``adjacency`` is any sparse (COO/CSR)
    ``[U + I, U + I]`` users-first operator (Â, a pruned Â, D^-1 (A + I), ...)."""
    n_users = user_embeddings.shape[0]
    embeddings = torch.cat([user_embeddings, item_embeddings], dim=0)
    layers = [embeddings]
    for _ in range(int(n_layers)):
        embeddings = torch.sparse.mm(adjacency, embeddings)
        layers.append(embeddings)
    mean = torch.stack(layers, dim=0).mean(dim=0)
    return mean[:n_users], mean[n_users:]


def edge_propagate(rows, cols, values, x, n_rows=None):
    """``A @ x`` for the edge list ``A[rows, cols] = values`` (duplicate edges add up), as a gather + index_add:
    differentiable in both ``values`` and ``x``, memory O(|E| d)."""
    n_rows = x.shape[0] if n_rows is None else n_rows
    out = torch.zeros((n_rows, x.shape[1]), dtype=x.dtype, device=x.device)
    return out.index_add(0, rows, values.unsqueeze(1) * x[cols])


# -- graph construction ------------------------------------------------------------------------------------------------
def bipartite_adjacency(users, items, n_users, n_items, normalization="sym", self_loops=False):
    """Users-first ``[U + I, U + I]`` adjacency of the user-item edges (both directions) as a coalesced sparse COO.

    ``normalization='sym'``: D^-1/2 (A [+ I]) D^-1/2 (LightGCN's Â; without self-loops it equals
    :func:`recbole_ssr.model.graph.normalized_adjacency`); ``'rw'``: D^-1 (A [+ I]) (row-stochastic, the NGCF-style
    operator LATTICE's authors feed their LightGCN). D counts the self-loop when ``self_loops``.
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
        values = torch.ones(rows.numel(), dtype=torch.float32)
        degree = torch.zeros(n, dtype=torch.float32).index_add_(0, rows, values)
        inverse = torch.where(degree > 0, 1.0 / degree.clamp(min=1e-12), torch.zeros_like(degree))
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values * inverse[rows], (n, n)).coalesce()
    raise ValueError(f"unknown normalization '{normalization}': use 'sym' or 'rw'")


def sym_normalize_edges(rows, cols, values, n):
    """Values of D^-1/2 A D^-1/2 for the edge list ``A[rows, cols] = values`` with D the row sums (the dense
    ``compute_normalized_laplacian`` of LATTICE/MMRec); nodes whose row sum is not positive get 0.
    Differentiable in ``values``."""
    degree = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    safe = degree.clamp(min=1e-12)
    inv_sqrt = torch.where(degree > 0, safe.pow(-0.5), torch.zeros_like(degree))
    return inv_sqrt[rows] * values * inv_sqrt[cols]


def knn_edges(embeddings, k, chunk_rows=None):
    """Top-``k`` cosine neighbours of every row of ``embeddings`` (itself included) as ``(rows, cols, values)``,
    ``values`` the cosine similarities **with their gradient** w.r.t. ``embeddings``.

    Equals ``topk(cos_sim(E), k)`` scattered into a dense I x I matrix (LATTICE's ``build_knn_neighbourhood``),
    including its gradient (top-k selection passes gradient only through the kept values), but the selection runs
    in row chunks without gradient and only the I*k kept similarities are recomputed with autograd:
    memory O(I k d + chunk I) instead of O(I^2).
    """
    n = embeddings.shape[0]
    indices, _ = knn_neighbours(embeddings.detach(), k, chunk_rows=chunk_rows)
    indices = indices.to(embeddings.device)
    rows = torch.arange(n, device=embeddings.device).repeat_interleave(indices.shape[1])
    cols = indices.reshape(-1)
    normalized = nn.functional.normalize(embeddings, dim=1)
    values = (normalized[rows] * normalized[cols]).sum(dim=1)
    return rows, cols, values


def weighted_knn_item_graph(model, name, k):
    """Frozen top-``k`` cosine kNN item graph of modality ``name`` with **cosine-weighted** edges, sym-normalised
    with the row sums (LATTICE's original graph S_m; ``MultimodalRecommender.knn_item_graph`` gives the binary one).

    Reads/writes the same disk-cache entry as ``knn_item_graph`` (the cached value is the ``(indices,
    similarities)`` pair of :func:`~recbole_ssr.model.graph.knn_neighbours`; only the adjacency built from it
    differs). Returns a coalesced sparse COO on ``model.device``.
    """
    features = model.modality_feature(name).detach().cpu()
    indices, similarities = model.graph_cache.get_or_build(
        "knn", {"modality": name, "k": int(k), "dim": features.shape[1]},
        lambda: knn_neighbours(features, k))
    return knn_adjacency(indices, features.shape[0], values=similarities, normalization="sym").to(model.device)


# -- edge sampling -----------------------------------------------------------------------------------------------------
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


# -- features ----------------------------------------------------------------------------------------------------------
class FeatureTables(nn.Module):
    """Raw modality feature tables ``[n_items, dim_m]``: trainable parameters when ``trainable`` (what the
    LATTICE/FREEDOM/BM3 authors do with ``nn.Embedding.from_pretrained(features, freeze=False)``), otherwise frozen
    non-persistent buffers. ``tables[name]`` returns the current table."""

    def __init__(self, features, trainable):
        super().__init__()
        self.names = list(features)
        self.trainable = bool(trainable)
        for name, matrix in features.items():
            if self.trainable:
                self.register_parameter(f"table_{name}", nn.Parameter(matrix.detach().clone()))
            else:
                self.register_buffer(f"table_{name}", matrix, persistent=False)

    def __getitem__(self, name):
        return getattr(self, f"table_{name}")

    def items(self):
        return [(name, self[name]) for name in self.names]


# -- pieces of MGCN / LGMRec / SMORE ----------------------------------------------------------------------
def propagate(adjacency, embeddings, n_layers):
    """Â^L E: ``n_layers`` plain sparse products, last layer only (item-item views, LGMRec's modality graph)."""
    for _ in range(int(n_layers)):
        embeddings = torch.sparse.mm(adjacency, embeddings)
    return embeddings


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


def per_modality(value, names, key):
    """Resolve a per-modality config entry: a number (same for every modality) or a mapping
    ``{modality: value, ..., default: value}``; names absent from the mapping take ``default``.
    Mapping keys that are not modalities of this dataset are ignored (one yaml serves Amazon and TikTok)."""
    if isinstance(value, dict):
        resolved = {}
        for name in names:
            if name in value:
                resolved[name] = value[name]
            elif "default" in value:
                resolved[name] = value["default"]
            else:
                raise ConfigError(f"{key} gives no value for modality '{name}' and no 'default' (has {list(value)}); "
                                  f"add '{name}: <value>' or 'default: <value>' to {key}.")
        return resolved
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number or a {{modality: value, default: value}} mapping, got {value!r}; "
                          f"on the command line write e.g. --{key}=\"{{'image': 40, 'default': 10}}\".")
    return {name: value for name in names}
