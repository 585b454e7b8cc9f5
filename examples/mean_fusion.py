"""MeanFusion: an example of your own multimodal model, benchmarked beside SSR and the baselines (examples/README.md).

    python run_recbole_ssr.py --model=examples/mean_fusion.py:MeanFusion,SSR,LightGCN --seeds=3 --results=bench.json

An item is its ID embedding blended with the mean of its projected content features, over whatever modalities the
dataset has (image + text, image + audio, one modality, ...):

    i = (1 - w) · e_i + w · (1/M) Σ_m (W_m x_m,i + b_m),     w = ``fusion_weight``

a user is a free ID embedding e_u, the score is ⟨e_u, i⟩, and the loss is BPR + ``reg_weight`` · Σ‖e‖²/B over the
batch's user and item vectors. ``MultimodalRecommender`` gives the modality features (``self.modality_features``),
the scoring (inner product of ``forward()``'s embeddings) and, if wanted, the graphs (``norm_adj_matrix``,
``knn_item_graph``); defaults are in ``MeanFusion.yaml`` beside this file, the search space of ``--tune=auto`` in
``MeanFusion.search.yaml``.
"""

import torch
from torch import nn

from recbole_ssr import MultimodalRecommender
from recbole_ssr.model.losses import bpr_loss, l2_penalty


class MeanFusion(MultimodalRecommender):
    min_modalities = 1  # refuses an ID-only dataset with one clear error
    config_ranges = {"fusion_weight": ("float", 0.0, 1.0)}  # checked before any data is loaded

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = config["embedding_size"]
        self.fusion_weight, self.reg_weight = config["fusion_weight"], config["reg_weight"]
        self.user_embedding = nn.Embedding(self.n_users, dim)
        self.item_embedding = nn.Embedding(self.n_items, dim)
        self.projections = nn.ModuleDict({name: nn.Linear(features.shape[1], dim)
                                          for name, features in self.modality_features.items()})
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def forward(self):
        content = torch.stack([self.projections[name](features)
                               for name, features in self.modality_features.items()]).mean(dim=0)
        items = (1.0 - self.fusion_weight) * self.item_embedding.weight + self.fusion_weight * content
        return self.user_embedding.weight, items

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_e, item_e = self.forward()
        u, i, j = user_e[users], item_e[pos], item_e[neg]
        return bpr_loss((u * i).sum(-1), (u * j).sum(-1)) + self.reg_weight * l2_penalty(u, i, j)
