"""Building blocks shared by the MGCN / LGMRec / SMORE baselines, next to :mod:`recbole_ssr.model.layers`
(LightGCN propagation, cosine-weighted kNN item graphs, trainable feature tables), which they also use.

* :func:`propagate` - Â^L E, last layer only (item-item views, LGMRec's modality graph embedding).
* :func:`user_item_block` - the user->item block R̂ = D_u^-1/2 R D_i^-1/2 of the normalised adjacency Â
  (MGCN's / SMORE's "normalised R" that lifts item-item-view item embeddings to users).
* :func:`sparse_max` - element-wise max of sparse graphs over the union of their edges (SMORE's fusion graph).
* :func:`per_modality` - a scalar or ``{name: value, default: value}`` config entry resolved per modality.
"""

import torch

from recbole_ssr.errors import ConfigError


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
