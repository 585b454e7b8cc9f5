"""DRAGON: Enhancing Dyadic Relations with Homogeneous Graphs for Multimodal Recommendation (Zhou et al., ECAI 2023).
Behaviour of the authors' code (hongyurain/DRAGON, as in MMRec's ``dragon.py``).

A heterogeneous graph (user-item) and two homogeneous graphs (user-user, item-item), named as in the paper:

1. **Heterogeneous graph**: per modality the GCN of DualGNN - item MLP features and user preferences over Â, two
   weight-free hops (:class:`~recbole_ssr.model.abstract.UserGraphRecommender`).
2. **Attentive concatenation**: item = [e_1,i ‖ ... ‖ e_M,i]; user = [w_u,1 e_1,u ‖ ... ‖ w_u,M e_M,u] with learnable
   per-user weights (softmax at initialisation); M·``embedding_size`` wide.
3. **Item-item graph** (frozen): per modality the binary top-``knn_k`` cosine kNN graph of the raw features,
   D^-1/2 A D^-1/2, mixed S = Σ_m α_m S_m with the authors' 0.1·image + 0.9·text (their ``mm_image_weight``;
   here ``reference_modality_weights``, and for another modality set ``modality_weights`` or equal weights, the
   FREEDOM rule); built once (disk-cached); item <- item + S^``n_mm_layers`` item.
4. **User-user graph**: top-``user_knn_k`` co-users by shared training items, softmax-weighted, resampled before
   every epoch; user <- user + Σ_v W_uv user_v (the base class).
5. **Loss**: log₂-BPR + ``reg_weight`` · (Σ_m mean(P_m[batch users]²) + mean(w²)).

Taken from the authors' code (details the paper leaves open): two hops of the modality GCN, one of the user
graph and ``n_mm_layers`` (1) of the item graph; top-40 neighbour lists, padded by sampling only for users with fewer
co-users; softmax of the raw counts; log₂ in the BPR loss; frozen raw features (the code keeps trainable copies of
the features and projections ``image_trs``/``text_trs`` that the forward pass never uses; left out).

Porting hazards of the authors' code not copied: the item graph is cached under a file name that ignores the
modality weight (here the cache key holds every graph parameter and the weights are applied after loading); the
user co-occurrence graph is precomputed by an O(U²) dense loop (here sparse, R Rᵀ in row chunks); interaction
tensors are shifted by n_users in place; ``torch.sparse.FloatTensor``; image + text assumed; ``full_sort_predict``
with the embeddings of the last training batch (here evaluation recomputes them in eval mode).
"""

from logging import getLogger

import torch

from recbole_ssr.model.abstract import UserGraphRecommender
from recbole_ssr.model.graph import propagate, sparse_to_csr


class DRAGON(UserGraphRecommender):
    """Modality GCNs, user graph and loss: :class:`~recbole_ssr.model.abstract.UserGraphRecommender`; here the
    attentive concatenation (2) and the frozen item-item graph (3)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_mm_layers = int(config["n_mm_layers"])
        self.mm_weights = self.modality_weights()
        getLogger().info("DRAGON item graph weights: "
                         + ", ".join(f"{m}={w:.3g}" for m, w in zip(self.modality_names, self.mm_weights)))
        self.register_buffer("mm_adj", sparse_to_csr(self.mixed_item_graph(int(config["knn_k"]), self.mm_weights)),
                             persistent=False)

    def fuse(self, views):
        users = torch.cat(self.weighted_user_views(views), dim=1)
        items = torch.cat([view[1] for view in views.values()], dim=1)
        return users, items + propagate(self.mm_adj, items, self.n_mm_layers)
