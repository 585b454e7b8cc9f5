"""SLMRec: Self-supervised Learning for Multimedia Recommendation (Tao et al., IEEE TMM 2022). Behaviour of the
authors' code as in MMRec's ``slmrec.py`` (``ssl_task: FAC``, MMRec's setting).

1. **Graph encoders** (the paper's backbone): LightGCN over Â (``n_layers`` = 3, mean of the layers 0..L) run once
   per view with the **same** user embeddings E_u: the ID view [E_u ; E_i] and, per modality m, the content view
   [E_u ; W_m normalise(f_m) + b_m] (row-wise L2-normalised frozen features, projected to ``embedding_size``).
2. **Fusion**: concatenation of the views (``embedding_size`` × (M + 1)), then one linear head for users and one
   for items back to ``embedding_size``; score = inner product.
3. **Main loss**: in-batch InfoNCE on cosines, τ = ``temperature``: each (user, positive item) pair of the batch
   against the batch's other positive items; **sampled negatives are not used**.
4. **Self-supervised task FAC** (fine and coarse spaces), on the batch's positive items: the ID view's item vector
   is mapped into one space per modality, in a chain - a_1 = g_1(e_id), a_m = g_m(a_{m-1}) - and contrasted with
   the modality's own view mapped into the same space, h_m(e_m): Σ_m InfoNCE(a_m, h_m) on **raw inner products**
   / ``ssl_temp`` (no normalisation, as the authors). All spaces are ``embedding_size`` wide except the last
   (coarsest) one, half as wide when there are several modalities.
5. **Loss** = main + ``ssl_alpha`` · FAC; Adam with ``weight_decay`` (1e-4) as the only regulariser.

Adaptation to RecBole's trainer: the authors' loader yields (user, positive, negative) triples and the loss ignores
the negatives; here the model is trained on observed (user, item) pairs only (``input_type`` POINTWISE,
``train_neg_sample_args: ~`` in the yaml, refused otherwise - :func:`~recbole_ssr.model.abstract.check_negative_free`):
the same loss without drawing negatives that are thrown away. As in the authors' code, a user or item that occurs
twice in a batch counts as a negative of its own other occurrence in the in-batch InfoNCE.

Where the authors' code differs from the paper, or is tied to one dataset, this follows the code for image + text
and generalises: the chain runs over the dataset's modalities in their order (the authors' repository: image,
audio, text; MMRec: image, then the audio level - whose loss is commented out, but whose map g_iv_iva still sits in
the chain - then text). Here a dataset without audio has no audio level: text's anchor is g_t(g_v(e_id)) instead of g_t(g_a(g_v(e_id))), a composition of
affine maps either way (the same function class). The code branches on the dataset name (``kwai``: visual only);
here any modality set works.

Left out: the reference's ``reg`` setting (in its search grid, never used by the loss), the feature-dropout and
feature-masking tasks (``FD``, ``FM``: they read a configuration key that does not exist and tables for audio that
are never built, so they cannot run in the reference), and its ``full_sort_predict``, which scores σ(u·i) with the
embeddings of the last training batch (here evaluation recomputes them in eval mode; σ does not change a ranking).
"""

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_ssr.model.abstract import GraphRecommender, check_negative_free
from recbole_ssr.model.graph import propagate, sparse_to_csr
from recbole_ssr.model.losses import info_nce

ID_VIEW = "_id"  # key of the ID view next to the modality names


def xavier_linear(in_dim, out_dim):
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class SLMRec(GraphRecommender):
    """Graph views (1), fusion (2), in-batch InfoNCE (3), FAC (4); numbers refer to the module docstring."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        check_negative_free(config, "SLMRec")
        dim = self.embedding_size
        self.n_layers = int(config["n_layers"])
        self.temperature, self.ssl_temp = float(config["temperature"]), float(config["ssl_temp"])
        self.ssl_alpha = float(config["ssl_alpha"])
        self.register_buffer("norm_adj", sparse_to_csr(self.norm_adj_matrix()), persistent=False)
        self.projections = nn.ModuleDict({
            name: xavier_linear(self.modality_feature(name).shape[1], dim) for name in self.modality_names})
        fused = dim * (len(self.modality_names) + 1)
        self.user_head, self.item_head = xavier_linear(fused, dim), xavier_linear(fused, dim)
        # FAC: one space per modality, the last (coarsest) half as wide when there are several
        self.anchor_maps, self.content_maps = nn.ModuleDict(), nn.ModuleDict()
        width = dim
        for index, name in enumerate(self.modality_names):
            out = dim // 2 if index == len(self.modality_names) - 1 and index > 0 else dim
            self.anchor_maps[name], self.content_maps[name] = xavier_linear(width, out), xavier_linear(dim, out)
            width = out

    def views(self):
        """``{view: (users [U, d], items [I, d])}`` for the ID view and every modality (1)."""
        users = self.user_embedding.weight
        inputs = {ID_VIEW: self.item_id_embedding.weight}
        for name in self.modality_names:
            inputs[name] = self.projections[name](F.normalize(self.modality_feature(name), dim=1))
        return {view: torch.split(propagate(self.norm_adj, torch.cat([users, items], dim=0), self.n_layers, "mean"),
                                  [self.n_users, self.n_items], dim=0)
                for view, items in inputs.items()}

    def fuse(self, views):
        """Concatenation of the views, then the user and item heads (2)."""
        users = torch.cat([view[0] for view in views.values()], dim=1)
        items = torch.cat([view[1] for view in views.values()], dim=1)
        return self.user_head(users), self.item_head(items)

    def forward(self):
        return self.fuse(self.views())

    def fac_loss(self, views, items):
        """Σ_m InfoNCE(a_m, h_m(e_m)) along the chain of spaces (4), on raw inner products."""
        anchor, loss = views[ID_VIEW][1][items], 0.0
        for name in self.modality_names:
            anchor = self.anchor_maps[name](anchor)
            content = self.content_maps[name](views[name][1][items])
            loss = loss + info_nce(anchor, content, self.ssl_temp, normalize=False)
        return loss

    def calculate_loss(self, interaction):
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        views = self.views()
        user_e, item_e = self.fuse(views)
        main = info_nce(user_e[users], item_e[items], self.temperature)
        return main + self.ssl_alpha * self.fac_loss(views, items)
