"""MGCN: Multi-View Graph Convolutional Network for Multimedia Recommendation (Yu et al., ACM MM 2023).

Three views of every node, then a behaviour-aware fusion (components named as in the paper; behaviour as in the
authors' code, read via MMRec):

1. **Behaviour-guided purifier**: per modality m, the projected feature F_m = W_m x_m + b_m purifies the
   item ID embedding, Ẽ_m = E_id ⊙ σ(W_g,m F_m + b_g,m).
2. **User-item view**: LightGCN over Â, mean of the layers 0..``n_ui_layers`` -> E_ui ("content" embeds).
3. **Item-item view**: per modality, ``n_layers`` products with the frozen kNN item graph S_m
   (top-``knn_k`` cosine neighbours, cosine-weighted, D^-1/2 S D^-1/2), then users Ē_m,u = R̂ Ē_m,i with
   R̂ = D_u^-1/2 R D_i^-1/2 the user-item block of Â.
4. **Behaviour-aware fuser**: attention α_m = softmax_m(qᵀ tanh(W_q e_m + b_q)) over the modality views
   gives the shared part E_s = Σ_m α_m Ē_m; modality-specific parts Ē_m - E_s are gated by the user/item
   preference P_m = σ(W_p,m E_ui + b_p,m); side = (E_s + Σ_m P_m ⊙ (Ē_m - E_s)) / (M + 1).
   Final embedding: E_ui + side.
5. **Loss**: BPR + ``cl_loss`` · [InfoNCE(side, E_ui) over the batch's positive items + the same over the
   batch users] (temperature ``cl_temperature`` = 0.2) + ``reg_weight`` · ½Σ‖e‖²/B on the final batch
   embeddings.

Generalisation beyond image + text: every modality of the dataset gets its own purifier, kNN graph and preference
gate; the fuser's attention is a softmax over the M modality views and the side view averages the shared part with
the M specific parts (M = 2 gives the paper's (E_s + P_v Ē_v' + P_t Ē_t') / 3). ``knn_k`` is a number or a
``{modality: k, default: k}`` mapping. With one modality the shared part is that view and its specific part is 0.
As in the authors' code the raw feature tables are fine-tuned (``finetune_features``); the kNN graphs come from the
original features, built once.
"""

import torch
from torch import nn

from recbole_ssr.model.abstract import MultimodalRecommender
from recbole_ssr.model.losses import bpr_loss, info_nce, l2_penalty
from recbole_ssr.model.layers import FeatureTables, lightgcn_propagate, weighted_knn_item_graph
from recbole_ssr.model.layers import per_modality, propagate, user_item_block


def gate(dim):
    """σ(W x + b), the purifier / preference gate."""
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


class MGCN(MultimodalRecommender):
    min_modalities = 1

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = config["embedding_size"]
        self.n_ui_layers = config["n_ui_layers"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.cl_weight = config["cl_loss"]
        self.temperature = config["cl_temperature"]

        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.item_id_embedding = nn.Embedding(self.n_items, dim)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)

        norm_adj = self.norm_adj_matrix()
        self.register_buffer("norm_adj", norm_adj, persistent=False)
        self.register_buffer("user_item", user_item_block(norm_adj, self.n_users, self.n_items), persistent=False)
        knn_k = per_modality(config["knn_k"], self.modality_names, "knn_k")
        for name in self.modality_names:
            self.register_buffer(f"item_graph_{name}", weighted_knn_item_graph(self, name, knn_k[name]),
                                 persistent=False)

        finetune = bool(config["finetune_features"])
        self.features = FeatureTables(self.modality_features, trainable=finetune)
        self.projection = nn.ModuleDict({
            name: nn.Linear(self.modality_feature(name).shape[1], dim) for name in self.modality_names})
        self.purifier = nn.ModuleDict({name: gate(dim) for name in self.modality_names})
        self.preference = nn.ModuleDict({name: gate(dim) for name in self.modality_names})
        self.query_common = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))

    def purified(self, name):
        """Behaviour-guided purifier: E_id ⊙ σ(W_g (W_m x_m + b_m) + b_g)."""
        projected = self.projection[name](self.features[name])
        return self.item_id_embedding.weight * self.purifier[name](projected)

    def modality_view(self, name):
        """Item-item view of one modality: [R̂ Ē_m,i ; Ē_m,i] with Ē_m,i = S_m^L Ẽ_m."""
        items = propagate(getattr(self, f"item_graph_{name}"), self.purified(name), self.n_layers)
        return torch.cat([torch.sparse.mm(self.user_item, items), items], dim=0)

    def fuse(self, views, content):
        """Behaviour-aware fuser over the M modality views -> side embedding."""
        views = torch.stack(views, dim=0)  # [M, N, d]
        attention = torch.softmax(self.query_common(views), dim=0)  # [M, N, 1]: softmax over modalities
        common = (attention * views).sum(dim=0)
        specific = [self.preference[name](content) * (views[m] - common)
                    for m, name in enumerate(self.modality_names)]
        return (common + sum(specific)) / (len(self.modality_names) + 1)

    def views(self):
        """(final, side, content) embeddings of all nodes, users first."""
        content = torch.cat(lightgcn_propagate(self.norm_adj, self.user_embedding.weight,
                                               self.item_id_embedding.weight, self.n_ui_layers), dim=0)
        side = self.fuse([self.modality_view(name) for name in self.modality_names], content)
        return content + side, side, content

    def forward(self):
        final, _, _ = self.views()
        return torch.split(final, [self.n_users, self.n_items], dim=0)

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        final, side, content = self.views()
        user_e, item_e = torch.split(final, [self.n_users, self.n_items], dim=0)
        side_u, side_i = torch.split(side, [self.n_users, self.n_items], dim=0)
        content_u, content_i = torch.split(content, [self.n_users, self.n_items], dim=0)
        u, i, j = user_e[users], item_e[pos], item_e[neg]
        loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        cl = (info_nce(side_i[pos], content_i[pos], self.temperature)
              + info_nce(side_u[users], content_u[users], self.temperature))
        return loss + self.reg_weight * 0.5 * l2_penalty(u, i, j) + self.cl_weight * cl
