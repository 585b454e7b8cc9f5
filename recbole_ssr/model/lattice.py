"""LATTICE: Mining Latent Structures for Multimedia Recommendation (Zhang et al., ACM MM 2021).

Item-item graphs learned from content, on top of a LightGCN (paper Sec. 3; behaviour of the authors' code,
CRIPAC-DIG/LATTICE, which MMRec reproduces):

1. **Original graphs** (eq. 1-3): per modality m, S_m = top-``knn_k`` cosine neighbours of the raw features
   (itself included, edges weighted by the similarity), normalised D^-1/2 S D^-1/2 (row sums). Built once,
   frozen, cached on disk.
2. **Learned graphs** (eq. 4-5): the same kNN construction on projected features ẽ_m = W_m e_m + b_m
   (``feat_embed_dim``), mixed with softmax modality weights α = softmax(w): Ã = Σ_m α_m Ã_m, normalised
   D^-1/2 Ã D^-1/2; the originals are mixed with the same weights.
3. **Skip connection** (eq. 6): A = (1 - λ)·learned + λ·original (``lambda_coeff`` λ = 0.9).
4. **Item-graph convolution** (eq. 7): h = A^L e_id (``n_layers`` L = 1) on the item ID embeddings; the final item
   embedding is the LightGCN item embedding + normalise(h) (eq. 8-9).
5. LightGCN on the user-item graph (``n_ui_layers`` = 2, mean of the layers). The authors feed it D^-1 (A + I)
   (row-normalised with self-loops, ``ui_normalization: rw_self_loops``); ``sym`` gives LightGCN's own Â.
6. Loss: BPR + ``reg_weight`` · ½ Σ‖e‖² / B on the propagated batch embeddings (u, i⁺, i⁻). LR decay [0.96, 50].

When the learned graph is rebuilt (checked against the authors' code): at the **first training batch of every
epoch** (``pre_epoch_processing`` raises the flag), with gradient - that batch's loss trains the projections W_m,
the modality weights w and (``finetune_features``) the raw features; the later batches of the epoch reuse that graph
detached, exactly like the authors' ``build_item_graph`` flag. Every evaluation rebuilds it from the current
parameters (the authors' ``test()`` calls ``forward(build_item_graph=True)``); the base class computes it once per
evaluation.

Memory: the authors hold every graph as a dense I x I float32 matrix (4·I² bytes: 0.2 GB per matrix at 7k items
(Baby), 1.35 GB at 18k (Sports), 2.1 GB at 23k (Clothing); with M modalities about 2M + 3 such matrices live at once
plus autograd copies, so dense LATTICE stops fitting a 16-32 GB machine at roughly 20k items). Here every graph is
an edge list of I·k·M entries with *identical* values and gradients: the top-k selection runs on row chunks of the
similarity matrix without gradient, and only the kept similarities are recomputed with autograd
(:func:`~recbole_ssr.model.graph.knn_edges`). Memory is O(I·k·M·d); each rebuild costs O(I²·d) time, so there is
no item-count limit to enforce.

Any number of modalities: one projection, one original and one learned graph per modality, softmax over M weights
(initialised equal, as the authors' [0.5, 0.5]); with one modality its weight is 1.
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.abstract import GraphRecommender
from recbole_ssr.model.graph import (bipartite_adjacency, bipartite_edges, knn_edges, propagate, sparse_to_csr,
                                     sym_normalize_edges)
from recbole_ssr.model.losses import bpr_l2

UI_NORMALIZATIONS = {"rw_self_loops": ("rw", True), "sym": ("sym", False)}


class LATTICE(GraphRecommender):
    """Learned + original item graphs (1-3) over the item IDs (4) on top of LightGCN (5), BPR (6); numbers refer to
    the module docstring."""

    config_ranges = {"feat_embed_dim": ("int", 1, None), "lambda_coeff": ("float", 0.0, 1.0)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_ui_layers, self.n_layers = int(config["n_ui_layers"]), int(config["n_layers"])
        self.knn_k, self.lambda_coeff = int(config["knn_k"]), float(config["lambda_coeff"])
        self.reg_weight = float(config["reg_weight"])

        self.add_feature_projections(config, config["feat_embed_dim"])  # W_m, b_m of the learned graphs (2)
        n_modalities = len(self.modality_names)
        self.modal_weight = nn.Parameter(torch.full((n_modalities,), 1.0 / n_modalities))

        normalization = config["ui_normalization"]
        if normalization not in UI_NORMALIZATIONS:
            raise ConfigError(f"ui_normalization '{normalization}' is unknown: use one of "
                              f"{', '.join(UI_NORMALIZATIONS)} (rw_self_loops = the authors' D^-1 (A + I)).")
        norm, loops = UI_NORMALIZATIONS[normalization]
        users, items = bipartite_edges(self.interaction_matrix)
        ui_adj = bipartite_adjacency(users, items, self.n_users, self.n_items, norm, self_loops=loops)
        self.register_buffer("ui_adj", sparse_to_csr(ui_adj.to(self.device)), persistent=False)

        # frozen original graphs S_m (sym-normalised each), stacked as one edge list tagged by modality
        rows, cols, values, modality = [], [], [], []
        for index, name in enumerate(self.modality_names):
            graph = self.knn_item_graph(name, self.knn_k, weighted=True).coalesce()
            rows.append(graph.indices()[0])
            cols.append(graph.indices()[1])
            values.append(graph.values())
            modality.append(torch.full_like(graph.values(), index, dtype=torch.int64))
        for key, parts in (("original_rows", rows), ("original_cols", cols), ("original_values", values),
                           ("original_modality", modality)):
            self.register_buffer(key, torch.cat(parts).to(self.device), persistent=False)

        self._rebuild = True
        self._item_adj = None  # detached CSR matrix of the last item graph built

    # -- item graph ---------------------------------------------------------------------------------------------
    def pre_epoch_processing(self, epoch=None):
        """Rebuild the learned item graph at the next training forward (the first batch of the epoch)."""
        self._rebuild = True

    def learned_item_graph(self):
        """Normalised learned graph D^-1/2 (Σ_m α_m kNN(W_m e_m + b_m)) D^-1/2 as (rows, cols, values),
        values differentiable w.r.t. the projections, the raw features and the modality weights."""
        alpha = torch.softmax(self.modal_weight, dim=0)
        rows, cols, values = [], [], []
        for index, (name, table) in enumerate(self.features.items()):
            r, c, v = knn_edges(self.projections[name](table), self.knn_k, skip=[0])  # 0: RecBole's padding item
            rows.append(r)
            cols.append(c)
            values.append(alpha[index] * v)
        rows, cols, values = torch.cat(rows), torch.cat(cols), torch.cat(values)
        return rows, cols, sym_normalize_edges(rows, cols, values, self.n_items)

    def item_graph(self):
        """A = (1 - λ)·learned + λ·Σ_m α_m S_m as an edge list (duplicates add up)."""
        alpha = torch.softmax(self.modal_weight, dim=0)
        rows, cols, values = self.learned_item_graph()
        original = alpha[self.original_modality] * self.original_values
        return (torch.cat([rows, self.original_rows]), torch.cat([cols, self.original_cols]),
                torch.cat([(1.0 - self.lambda_coeff) * values, self.lambda_coeff * original]))

    def _item_graph_operator(self):
        """The item graph for this forward: ``(edge list with gradient, None)`` when it is (re)built in training,
        else ``(None, detached CSR matrix)`` (the later batches of an epoch, and evaluation under no_grad).
        Sparse products with a CSR matrix are much faster on CPU than the differentiable edge-list product."""
        if self.training and not self._rebuild and self._item_adj is not None:
            return None, self._item_adj
        rows, cols, values = self.item_graph()
        n = self.n_items
        adjacency = torch.sparse_coo_tensor(torch.stack([rows, cols]), values.detach(), (n, n)).coalesce()
        self._item_adj = sparse_to_csr(adjacency)
        if self.training:
            self._rebuild = False
        if values.requires_grad:
            return (rows, cols, values), None
        return None, self._item_adj

    # -- model --------------------------------------------------------------------------------------------------
    def forward(self):
        edges, adjacency = self._item_graph_operator()
        h = propagate(edges if edges is not None else adjacency, self.item_id_embedding.weight, self.n_layers)
        users, items = self.lightgcn(self.ui_adj, self.n_ui_layers)
        return users, items + F.normalize(h, p=2, dim=1)

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_e, item_e = self.forward()
        u, i, j = user_e[users], item_e[pos], item_e[neg]
        return bpr_l2(u, i, j, self.reg_weight * 0.5)
