"""FREEDOM: A Tale of Two Graphs - Freezing and Denoising Graph Structures for Multimodal Recommendation
(Zhou & Shen, ACM MM 2023). Behaviour of the authors' code (enoche/FREEDOM, as in MMRec).

1. **Frozen item-item graph** (Sec. 3.1): per modality m, the binary top-``knn_k`` cosine kNN graph of the raw
   features, D^-1/2 A_m D^-1/2; mixed S = Σ_m w_m Ŝ_m with fixed weights (the paper: 0.1·image + 0.9·text).
   Built once before training (disk-cached), never updated - a buffer, not a parameter.
2. **Denoised user-item graph** (Sec. 3.2, degree-sensitive edge pruning): before every training epoch
   (``pre_epoch_processing``) keep ``int((1 - dropout)·|E|)`` training edges drawn without replacement with
   probability ∝ 1/sqrt(d_u d_i), and re-normalise the kept graph D^-1/2 A' D^-1/2 with its own degrees.
   Evaluation uses the full graph Â.
3. **Propagation** (Sec. 3.3): h = S^L e_id (``n_mm_layers`` = 1) on the item ID embeddings; LightGCN over the
   (pruned) user-item graph (``n_ui_layers`` = 2, mean of the layers); item = LightGCN item + h.
4. **Loss** (Sec. 3.4): BPR(u, i⁺, i⁻) + ``reg_weight`` · Σ_m BPR(u, f_m(i⁺), f_m(i⁻)) with f_m(i) = W_m x_m,i + b_m
   the projected raw features (``finetune_features``: the raw tables are trainable, as in the authors' code).

Modality weights of the frozen graph, for any modality set: ``modality_weights`` (a ``{name: w}`` mapping naming
every modality, or a list in modality order) when set; otherwise ``reference_modality_weights`` (the authors'
``{image: 0.1, text: 0.9}``) when the dataset has exactly those modalities; otherwise equal weights 1/M (e.g.
TikTok's image + audio, a single modality, or image + text + audio). Weights are normalised to sum to 1.
"""

from logging import getLogger

import torch

from recbole_ssr.model.abstract import GraphRecommender
from recbole_ssr.model.graph import (bipartite_adjacency, bipartite_edges, degree_edge_weights,
                                     degree_sensitive_pruning, propagate, sparse_to_csr)
from recbole_ssr.model.losses import bpr_loss


class FREEDOM(GraphRecommender):
    """Frozen mixed kNN item graph (1) + degree-pruned user-item graph (2), propagated (3), BPR + content BPR (4);
    numbers refer to the module docstring."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.knn_k, self.dropout = int(config["knn_k"]), float(config["dropout"])
        self.n_mm_layers, self.n_ui_layers = int(config["n_mm_layers"]), int(config["n_ui_layers"])
        self.reg_weight = float(config["reg_weight"])

        self.add_feature_projections(config, self.embedding_size)  # f_m of the loss (4)

        # 1. frozen multimodal item graph
        self.mm_weights = self.modality_weights()
        getLogger().info("FREEDOM item graph weights: "
                         + ", ".join(f"{m}={w:.3g}" for m, w in zip(self.modality_names, self.mm_weights)))
        self.register_buffer("mm_adj", sparse_to_csr(self.mixed_item_graph(self.knn_k, self.mm_weights)),
                             persistent=False)

        # 2. user-item graph: full for evaluation, the training edges and their pruning weights 1/sqrt(d_u d_i)
        self.register_buffer("norm_adj", sparse_to_csr(self.norm_adj_matrix()), persistent=False)
        users, items = bipartite_edges(self.interaction_matrix)
        users = torch.as_tensor(users, device=self.device)
        items = torch.as_tensor(items, device=self.device)
        self.register_buffer("edge_users", users, persistent=False)
        self.register_buffer("edge_items", items, persistent=False)
        self.register_buffer("edge_weights", degree_edge_weights(users, items, self.n_users, self.n_items),
                             persistent=False)
        self.masked_adj = None
        self.kept_edges = None  # (users, items) kept for the current epoch

    def pre_epoch_processing(self, epoch=None):
        """Degree-sensitive edge pruning of the user-item graph for the coming epoch."""
        if self.dropout <= 0.0:
            self.kept_edges = (self.edge_users, self.edge_items)
            self.masked_adj = self.norm_adj
            return
        users, items = degree_sensitive_pruning(self.edge_users, self.edge_items, self.n_users, self.n_items,
                                                self.dropout, weights=self.edge_weights)
        self.kept_edges = (users, items)
        self.masked_adj = sparse_to_csr(
            bipartite_adjacency(users.cpu(), items.cpu(), self.n_users, self.n_items).to(self.edge_users.device))

    def forward(self):
        if self.training:
            if self.masked_adj is None:
                self.pre_epoch_processing()
            adjacency = self.masked_adj
        else:
            adjacency = self.norm_adj
        h = propagate(self.mm_adj, self.item_id_embedding.weight, self.n_mm_layers)
        users, items = self.lightgcn(adjacency, self.n_ui_layers)
        return users, items + h

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_e, item_e = self.forward()
        u = user_e[users]
        loss = bpr_loss((u * item_e[pos]).sum(-1), (u * item_e[neg]).sum(-1))
        content = 0.0
        for name, table in self.features.items():
            projected = self.projections[name](table)
            content = content + bpr_loss((u * projected[pos]).sum(-1), (u * projected[neg]).sum(-1))
        return loss + self.reg_weight * content
