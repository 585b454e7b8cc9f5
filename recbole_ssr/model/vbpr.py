"""VBPR: Visual Bayesian Personalized Ranking (He & McAuley, AAAI 2016).

Score ŷ_ui = ⟨[p_u ; θ_u], [q_i ; E f_i]⟩: BPR matrix factorisation whose item factor is extended with the content
features f_i projected by a learned matrix E (eq. 2 of the paper; the bias terms are omitted as in MMRec).
The original uses one visual feature; here f_i is the concatenation of every content modality of the dataset
(image + text on Amazon, as MMRec does; image + audio on TikTok; ...).
"""

import torch
from torch import nn

from recbole_ssr.model.abstract import MultimodalRecommender
from recbole_ssr.model.losses import bpr_l2


class VBPR(MultimodalRecommender):
    min_modalities = 1

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = config["embedding_size"]
        self.reg_weight = config["reg_weight"]
        features = torch.cat([self.modality_feature(m) for m in self.modality_names], dim=1)
        self.register_buffer("item_content", features, persistent=False)
        self.user_embedding = nn.Embedding(self.n_users, 2 * dim)  # [p_u ; θ_u]
        self.item_embedding = nn.Embedding(self.n_items, dim)  # q_i
        self.content_projection = nn.Linear(features.shape[1], dim)  # E
        self.dropout = nn.Dropout(config["dropout"])
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)

    def forward(self):
        items = torch.cat([self.item_embedding.weight, self.content_projection(self.item_content)], dim=1)
        return self.user_embedding.weight, self.dropout(items)

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_e, item_e = self.forward()
        u, i, j = user_e[users], item_e[pos], item_e[neg]
        return bpr_l2(u, i, j, self.reg_weight)
