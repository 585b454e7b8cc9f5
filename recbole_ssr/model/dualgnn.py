"""DualGNN: Dual Graph Neural Network for Multimedia Recommendation (Wang et al., IEEE TMM 2021). Behaviour of the
authors' code as in MMRec's ``dualgnn.py``.

Two graphs: the user-item graph, per modality, and a user co-occurrence graph for the fusion.

1. **Single-modal representations**: per modality a GCN of item MLP features and user preferences over Â
   (two weight-free hops, x + Âx + Â²x) - :class:`~recbole_ssr.model.abstract.UserGraphRecommender`.
2. **Multi-modal fusion**: item = Σ_m e_m,i (sum of the modality vectors); user = Σ_m w_u,m e_m,u with learnable
   per-user weights w_u (softmax at initialisation; the paper's weighted-sum fusion).
3. **User co-occurrence graph** (multi-modal representations of users): each user's top-``user_knn_k`` (40) co-users
   by shared training items, softmax-weighted, neighbour lists resampled before every epoch; e_u <- e_u + Σ_v W_uv
   e_v (the base class).
4. **Loss**: log₂-BPR + ``reg_weight`` · (Σ_m mean(P_m[batch users]²) + mean(w²)).

Taken from the authors' code (details the paper leaves open, or where the code is more specific than "sampling"
co-users): two hops of the modality GCN and one of the user graph; the neighbour lists are the top-40 co-users in
every epoch - only users with fewer co-users have their lists padded by sampling, differently each epoch; softmax
of the raw co-occurrence counts; log₂ in the BPR loss; frozen raw features.

Bugs and porting hazards of the authors' code not copied:

* the user fusion aliases a tensor: the item sum is accumulated **in place** into the image representation, which
  then enters the user fusion, so its users are w_v·(v + t) + w_t·t instead of the paper's w_v·v + w_t·t; here
  the paper's weighted sum (the same family of functions, reached with other weights);
* the user co-occurrence graph comes from a precomputed file built by an O(U²) dense Python loop; here it is
  computed sparsely (R Rᵀ in row chunks, :func:`~recbole_ssr.model.graph.cooccurrence_neighbours`);
* per-item modality weights (``weight_i``) that are regularised but never used, unused MLPs and an item-dropout
  edge list that is built but never used are left out;
* user weights shaped for exactly two modalities (here one per modality of the dataset, none with one), and
  ``full_sort_predict`` with the embeddings of the last training batch (here evaluation recomputes them in eval
  mode, over the last epoch's user graph).
"""

import torch

from recbole_ssr.model.abstract import UserGraphRecommender


class DualGNN(UserGraphRecommender):
    """Modality GCNs, user graph and loss: :class:`~recbole_ssr.model.abstract.UserGraphRecommender`; here the
    fusion (2)."""

    def fuse(self, views):
        users = torch.stack(self.weighted_user_views(views), dim=0).sum(dim=0)
        items = torch.stack([view[1] for view in views.values()], dim=0).sum(dim=0)
        return users, items
