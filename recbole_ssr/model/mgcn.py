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

from recbole_ssr.model.abstract import MultiViewRecommender
from recbole_ssr.model.layers import gate


class MGCN(MultiViewRecommender):
    """Views, ID embeddings, graphs and loss: :class:`~recbole_ssr.model.abstract.MultiViewRecommender`; here the
    purifier (1) and the behaviour-aware fuser (4)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = self.embedding_size
        self.purifier = nn.ModuleDict({name: gate(dim) for name in self.modality_names})
        self.preference = nn.ModuleDict({name: gate(dim) for name in self.modality_names})
        self.query_common = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))

    def purified(self, name):
        """Behaviour-guided purifier: E_id ⊙ σ(W_g (W_m x_m + b_m) + b_g)."""
        projected = self.projection[name](self.features[name])
        return self.item_id_embedding.weight * self.purifier[name](projected)

    def modality_view(self, name):
        """Item-item view of one modality (3): [R̂ Ē_m,i ; Ē_m,i] with Ē_m,i = S_m^L Ẽ_m."""
        return self.item_item_view(name, self.purified(name))

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
        content = self.content()
        side = self.fuse([self.modality_view(name) for name in self.modality_names], content)
        return content + side, side, content
