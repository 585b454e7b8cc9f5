"""BM3: Bootstrap Latent Representations for Multi-modal Recommendation (Zhou et al., WWW 2023).
Behaviour of the authors' code (enoche/BM3, as in MMRec).

No negative items and no target network (paper Sec. 3):

1. **Encoders** (Sec. 3.1): LightGCN over Â (``n_layers``, mean of the layers) on user/item ID embeddings, the item
   output plus its ID embedding (residual); per modality m a projection f_m(x) = W_m x + b_m to ``embedding_size``
   (``finetune_features``: the raw tables are trainable, as in the authors' code).
2. **Contrastive view generator** (Sec. 3.2): one predictor p (a linear layer shared by users, items and every
   modality) gives the online views p(h); the target views are the *detached* online embeddings with dropout
   (``dropout``), h̃ = Dropout(sg(h)) - no momentum encoder.
3. **Multi-modal contrastive loss** (Sec. 3.3), on the batch's observed (user, item) pairs, with
   C(a, b) = 1 - cos(a, b) averaged over the batch:
   * graph reconstruction:  C(p(h_u), h̃_i) + C(p(h_i), h̃_u)
   * inter-modality alignment (modality <-> item):  Σ_m C(p(f_m(i)), h̃_i)
   * intra-modality masked loss (modality <-> its own masked view):  Σ_m C(p(f_m(i)), Dropout(sg(f_m(i))))
   L = reconstruction + ``cl_weight`` · (alignment + masked) + ``reg_weight`` · (‖H_u‖_F + ‖H_i‖_F) / I, the last
   term on the full online user/item tables (MMRec's ``EmbLoss``).
4. **Scoring**: ⟨p(h_u), p(h_i)⟩.

Any number of modalities: the alignment and masked terms are summed over every modality of the dataset (the
paper's image + text gives its four terms). Training uses no negatives: ``input_type`` is POINTWISE and the
model yaml sets ``train_neg_sample_args: ~``, so RecBole's training loader yields only observed (user, item)
pairs; the model refuses a configuration that turns negative sampling back on
(:func:`~recbole_ssr.model.abstract.check_negative_free`).
"""

import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_ssr.model.abstract import GraphRecommender, check_negative_free
from recbole_ssr.model.graph import sparse_to_csr


def cosine_loss(online, target):
    """1 - mean cosine similarity of matching rows; ``target`` carries no gradient."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(GraphRecommender):
    """LightGCN encoder (1), dropout target views (2), multi-modal contrastive loss (3); numbers refer to the module
    docstring."""

    input_type = InputType.POINTWISE
    config_ranges = {"cl_weight": ("float", 0.0, None)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_negative_free(config, "BM3")
        dim = self.embedding_size
        self.n_layers = int(config["n_layers"])
        self.reg_weight = float(config["reg_weight"])
        self.cl_weight = float(config["cl_weight"])
        self.dropout = float(config["dropout"])

        self.predictor = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.predictor.weight)
        self.add_feature_projections(config, dim, init=nn.init.xavier_normal_)
        self.register_buffer("norm_adj", sparse_to_csr(self.norm_adj_matrix()), persistent=False)

    def online_embeddings(self):
        """(h_u [U, d], h_i [I, d]) before the predictor: LightGCN mean + the item ID residual."""
        users, items = self.lightgcn(self.norm_adj, self.n_layers)
        return users, items + self.item_id_embedding.weight

    def forward(self):
        """Scoring embeddings p(h_u), p(h_i)."""
        users, items = self.online_embeddings()
        return self.predictor(users), self.predictor(items)

    def target(self, embeddings):
        """Target view: the detached online embedding with dropout (always on, as in the authors' code)."""
        return F.dropout(embeddings.detach(), p=self.dropout, training=True)

    def calculate_loss(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        user_all, item_all = self.online_embeddings()
        u_target, i_target = self.target(user_all[users]), self.target(item_all[items])
        u_online, i_online = self.predictor(user_all[users]), self.predictor(item_all[items])
        loss = cosine_loss(u_online, i_target) + cosine_loss(i_online, u_target)

        contrast = 0.0
        for name, table in self.features.items():
            projected = self.projections[name](table[items])
            online = self.predictor(projected)
            contrast = contrast + cosine_loss(online, i_target) + cosine_loss(online, self.target(projected))
        regulariser = (user_all.norm() + item_all.norm()) / item_all.shape[0]
        return loss + self.cl_weight * contrast + self.reg_weight * regulariser
