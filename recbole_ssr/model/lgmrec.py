"""LGMRec: Local and Global Graph Learning for Multimodal Recommendation (Guo et al., AAAI 2024).

Local graph embedding + global hypergraph embedding, as in the authors' code:

* **Collaborative graph embedding**: LightGCN over Â with ``n_ui_layers`` (mean of the layer outputs;
  ``cf_model: mf`` uses the raw ID embeddings) -> E^c.
* **Modality graph embedding**, decoupled from the IDs: item vectors E_m,i = X_m W_m (frozen features,
  learned projection without bias); users start as the mean of their training items, E_m,u = D_u^-1 R E_m,i; then
  ``n_mm_layers`` products with Â (last layer) -> E^m. Local: E^l = E^c + Σ_m normalise(E^m).
* **Global hypergraph embedding**: ``hyper_num`` learnable hyperedges per modality, V_m [feat_dim, H].
  Item-hyperedge logits X_m V_m, user-hyperedge logits R X_m V_m; assignments H = Gumbel-softmax(logits,
  τ = ``tau``) per row (each row sums to 1); edge dropout keeps ``keep_rate`` of the assignment entries (inverted
  dropout, training only). ``n_hyper_layer`` layers of message passing on the item side of E^c:
  Λ = H_iᵀ E_i, E_i <- H_i Λ, E_u = H_u Λ -> E^h_m = [E_u ; E_i]. Global: E^g = Σ_m E^h_m.
* **Final**: E = E^l + ``alpha`` · normalise(E^g); score = inner product.
* **Loss**: BPR + ``cl_weight`` · hypergraph InfoNCE + ``reg_weight`` · Σ‖e‖₂/B (the authors use the
  unsquared L2 norms of the batch's final embeddings). The InfoNCE (summed over the batch, τ = ``tau``) takes a
  node's global embedding in modality m as anchor, the same node in modality n as positive and every node of
  modality n as candidates, for users (the batch users) and items (the positive items).

Generalisation beyond image + text: each modality has its own projection, hyperedges and Gumbel assignments; the
local and global parts sum over all M modalities; the hypergraph InfoNCE runs over every modality pair (m, n),
m < n in modality order (M = 2 is the paper's single image->text term; with one modality it is 0).
Evaluation: the authors' code samples Gumbel noise in every forward, evaluation included (``gumbel_at_eval: True``);
``gumbel_at_eval: False`` uses the noise-free softmax(logits/τ) when not training.
"""

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.abstract import GraphRecommender
from recbole_ssr.model.graph import bipartite_edges, propagate
from recbole_ssr.model.losses import bpr_loss


class LGMRec(GraphRecommender):
    """Local (collaborative + modality graph) and global (hypergraph) embeddings; see the module docstring."""

    config_ranges = {"feat_embed_dim": ("int?", 1, None), "n_hyper_layer": ("int", 0, None),
                     "hyper_num": ("int", 1, None), "keep_rate": ("float", 0.0, 1.0, "(]"),
                     "alpha": ("float", 0.0, None), "cl_weight": ("float", 0.0, None)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = self.embedding_size
        feat_dim = config["feat_embed_dim"] or dim
        if feat_dim != dim:
            raise ConfigError(f"LGMRec adds modality and ID embeddings: feat_embed_dim ({feat_dim}) must equal "
                              f"embedding_size ({dim}).")
        self.cf_model = config["cf_model"]
        if self.cf_model not in ("lightgcn", "mf"):
            raise ConfigError(f"cf_model must be 'lightgcn' or 'mf', got '{self.cf_model}'.")
        self.n_ui_layers = config["n_ui_layers"]
        self.n_mm_layers = config["n_mm_layers"]
        self.n_hyper_layers = config["n_hyper_layer"]
        if self.n_hyper_layers < 1:
            raise ConfigError(f"n_hyper_layer must be >= 1 (got {self.n_hyper_layers}); "
                              "alpha: 0 switches the global view off.")
        self.hyper_num = config["hyper_num"]
        self.alpha = config["alpha"]
        self.tau = config["tau"]
        self.cl_weight = config["cl_weight"]
        self.reg_weight = config["reg_weight"]
        self.gumbel_at_eval = bool(config["gumbel_at_eval"])

        self.register_buffer("norm_adj", self.norm_adj_matrix(), persistent=False)
        users, items = bipartite_edges(self.interaction_matrix)
        interactions = torch.sparse_coo_tensor(
            torch.as_tensor(np.stack([users, items])), torch.ones(len(users)), (self.n_users, self.n_items))
        self.register_buffer("interactions", interactions.coalesce().to(self.device), persistent=False)  # R
        degree = torch.bincount(torch.as_tensor(users), minlength=self.n_users).float()
        self.register_buffer("inv_user_degree", (1.0 / (degree + 1e-7)).unsqueeze(1).to(self.device),
                             persistent=False)

        self.projection = nn.ParameterDict()
        self.hyperedges = nn.ParameterDict()
        for name in self.modality_names:
            width = self.modality_feature(name).shape[1]
            self.projection[name] = nn.Parameter(nn.init.xavier_uniform_(torch.empty(width, feat_dim)))
            self.hyperedges[name] = nn.Parameter(nn.init.xavier_uniform_(torch.empty(width, self.hyper_num)))
        self.edge_dropout = nn.Dropout(1.0 - config["keep_rate"])

    # -- local ---------------------------------------------------------------------------------------------------
    def collaborative(self):
        """E^c."""
        if self.cf_model == "lightgcn":
            users, items = self.lightgcn(self.norm_adj, self.n_ui_layers)
        else:
            users, items = self.user_embedding.weight, self.item_id_embedding.weight
        return torch.cat([users, items], dim=0)

    def modality_graph(self, name):
        """E^m: projected features, users = mean of their items, ``n_mm_layers`` of Â."""
        items = self.modality_feature(name) @ self.projection[name]
        users = torch.sparse.mm(self.interactions, items) * self.inv_user_degree
        return propagate(self.norm_adj, torch.cat([users, items], dim=0), self.n_mm_layers)

    # -- global --------------------------------------------------------------------------------------------------
    def hyperedge_assignments(self, name):
        """(items [n_items, H], users [n_users, H]) soft hyperedge memberships; every row sums to 1."""
        item_logits = self.modality_feature(name) @ self.hyperedges[name]
        user_logits = torch.sparse.mm(self.interactions, item_logits)
        if self.training or self.gumbel_at_eval:
            return (F.gumbel_softmax(item_logits, tau=self.tau, dim=1, hard=False),
                    F.gumbel_softmax(user_logits, tau=self.tau, dim=1, hard=False))
        return torch.softmax(item_logits / self.tau, dim=1), torch.softmax(user_logits / self.tau, dim=1)

    def hypergraph(self, name, item_embeddings):
        """E^h_m = [E_u ; E_i]: hypergraph message passing with edge dropout on the assignments."""
        item_hyper, user_hyper = (self.edge_dropout(h) for h in self.hyperedge_assignments(name))
        items = item_embeddings
        for _ in range(self.n_hyper_layers):
            hyperedges = item_hyper.T @ items  # Λ = H_iᵀ E_i  [H, d]
            items = item_hyper @ hyperedges
            users = user_hyper @ hyperedges
        return torch.cat([users, items], dim=0)

    def embeddings(self):
        """(final embeddings of all nodes, {modality: hypergraph embeddings}), users first."""
        collaborative = self.collaborative()
        local = collaborative + sum(F.normalize(self.modality_graph(name)) for name in self.modality_names)
        hyper = {name: self.hypergraph(name, collaborative[self.n_users:]) for name in self.modality_names}
        final = local + self.alpha * F.normalize(sum(hyper.values()))
        return final, hyper

    def forward(self):
        final, _ = self.embeddings()
        return torch.split(final, [self.n_users, self.n_items], dim=0)

    # -- loss ----------------------------------------------------------------------------------------------------
    def hypergraph_infonce(self, anchors, positives, candidates):
        """Σ_b -log( exp(cos(a_b, p_b)/τ) / Σ_c exp(cos(a_b, c)/τ) ) (p_b is itself one of the candidates)."""
        # This loss is most of an LGMRec step (N = every user / every item): 1/τ scales the [B, d] anchors instead
        # of the [B, N] similarities, and since cosines lie in [-1, 1], exp(cos/τ) cannot overflow float32 for
        # τ ≥ 1/80, where the plain log of the sum (no max subtraction) is exact and cheaper.
        anchors = F.normalize(anchors, dim=1) / self.tau
        positives, candidates = F.normalize(positives, dim=1), F.normalize(candidates, dim=1)
        positive = (anchors * positives).sum(dim=1)
        logits = anchors @ candidates.T
        if self.tau >= 1.0 / 80:
            return (torch.log(torch.exp(logits).sum(dim=1)) - positive).sum()
        return (torch.logsumexp(logits, dim=1) - positive).sum()

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        final, hyper = self.embeddings()
        user_e, item_e = torch.split(final, [self.n_users, self.n_items], dim=0)
        u, i, j = user_e[users], item_e[pos], item_e[neg]
        loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        cl = 0.0
        for first, second in itertools.combinations(self.modality_names, 2):
            u_m, i_m = torch.split(hyper[first], [self.n_users, self.n_items], dim=0)
            u_n, i_n = torch.split(hyper[second], [self.n_users, self.n_items], dim=0)
            cl = cl + self.hypergraph_infonce(u_m[users], u_n[users], u_n)
            cl = cl + self.hypergraph_infonce(i_m[pos], i_n[pos], i_n)
        reg = (u.norm(p=2) + i.norm(p=2) + j.norm(p=2)) / u.shape[0]
        return loss + self.cl_weight * cl + self.reg_weight * reg
