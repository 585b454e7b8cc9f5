"""MMGCN: Multi-modal Graph Convolution Network for Personalized Recommendation of Micro-video (Wei et al., ACM MM
2019). Behaviour of the authors' code (weiyinwei/MMGCN, as in MMRec's ``mmgcn.py``).

One GCN per modality over the user-item graph, each with its own user-preference table; the modality outputs are
averaged. Per modality m (components named as in the paper):

0. **Input**: items carry the modality features f_m (frozen), projected to ``modality_latent_dim`` first where it
   is set (the authors: image -> 256, text raw); users carry a learnable preference P_m of the same width
   (Xavier-normal). x = L2-normalise([P_m ; f_m]) row-wise.
1. **Aggregation layer** (mean aggregation): h = LeakyReLU(D^-1 A (x W_agg)) - the mean of the
   neighbours' transformed vectors over the bipartite graph A (no self-loop).
2. **Combination layer**: x̂ = LeakyReLU(W_x x + b) + e_id with e_id the node's ID embedding (shared
   by all modalities), then x <- LeakyReLU(W_c [h ‖ x̂] + b) (the concatenation variant of the combination
   function). Steps 1-2 are repeated ``n_layers`` times (the later layers are ``embedding_size`` wide).
3. **Model prediction**: the representation of a node is the mean of its M modality outputs; score = inner
   product.
4. **Loss**: BPR + ``reg_weight`` · (mean(e_u²) + ½ mean(e_i⁺²) + ½ mean(e_i⁻²) + Σ_m mean(P_m²)) - the authors'
   mean over the batch's repeated user and interleaved item ID embeddings, and the full preference tables.

Taken from the authors' code where it fixes what the paper leaves as options, or departs from it:

* the combination is the concatenation variant: the code passes the string ``'False'`` as its ``concate`` switch,
  which Python reads as true (both the authors' repository and MMRec);
* ``n_layers`` = 3: MMRec's code hard-codes three layers (its ``n_layers`` setting is read but unused); the later
  layers' W_c keep PyTorch's default initialisation, the others are Xavier-normal, W_agg is U(±1/√width);
* image features are projected to 256 before the first layer and text features enter raw (widths 4096 vs 384 on
  Amazon); here ``modality_latent_dim: {image: 256, default: 0}`` (0 = raw) does the same for any modality set.

Bugs of the authors' code not copied:

* its ID embeddings and user preferences are plain tensors, never registered as parameters, so they are never
  trained (the ID signal stays random noise and the regulariser is a constant); here both are trained and the
  regulariser acts on them;
* ``full_sort_predict`` scores with the embeddings cached by the last training batch; here evaluation recomputes
  them in eval mode (the base class' evaluation cache);
* only the image preference is regularised (an image/text branch); here every modality's preference is.

Init: ID embeddings Xavier-normal per table (the authors: one stacked [U + I, d] table).
"""

import torch
import torch.nn.functional as F
from torch import nn

from recbole_ssr.model.abstract import GraphRecommender
from recbole_ssr.model.graph import bipartite_adjacency, bipartite_edges, csr_transpose, propagate, sparse_to_csr
from recbole_ssr.model.layers import per_modality


class ModalityGCN(nn.Module):
    """One modality's GCN: input (0), ``n_layers`` × (aggregation (1) + combination (2)) -> [U + I, dim]."""

    def __init__(self, n_users, feature_dim, latent_dim, dim, n_layers):
        super().__init__()
        self.projection = nn.Linear(feature_dim, latent_dim) if latent_dim else None
        width = latent_dim or feature_dim
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, width)))
        self.aggregation, self.transform, self.combination = nn.ParameterList(), nn.ModuleList(), nn.ModuleList()
        for layer in range(n_layers):
            in_dim = width if layer == 0 else dim
            bound = in_dim ** -0.5
            self.aggregation.append(nn.Parameter(torch.empty(in_dim, in_dim).uniform_(-bound, bound)))
            self.transform.append(nn.Linear(in_dim, dim))
            nn.init.xavier_normal_(self.transform[-1].weight)
            self.combination.append(nn.Linear(in_dim + dim, dim))
        nn.init.xavier_normal_(self.combination[0].weight)

    def forward(self, features, mean_adj, mean_adj_t, id_embeddings):
        items = features if self.projection is None else self.projection(features)
        x = F.normalize(torch.cat([self.preference, items], dim=0), dim=1)
        for weight, transform, combination in zip(self.aggregation, self.transform, self.combination):
            h = F.leaky_relu(propagate(mean_adj, x @ weight, 1, transpose=mean_adj_t))
            x_hat = F.leaky_relu(transform(x)) + id_embeddings
            x = F.leaky_relu(combination(torch.cat([h, x_hat], dim=1)))
        return x


class MMGCN(GraphRecommender):
    """Per-modality GCNs (0-2) averaged (3), BPR + regulariser (4); numbers refer to the module docstring."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.reg_weight = float(config["reg_weight"])
        for table in (self.user_embedding, self.item_id_embedding):
            nn.init.xavier_normal_(table.weight)
        users, items = bipartite_edges(self.interaction_matrix)
        mean_adj = sparse_to_csr(bipartite_adjacency(users, items, self.n_users, self.n_items, "rw").to(self.device))
        self.register_buffer("mean_adj", mean_adj, persistent=False)  # D^-1 A: mean over the neighbours
        self.register_buffer("mean_adj_t", csr_transpose(mean_adj), persistent=False)
        latent = per_modality(config["modality_latent_dim"], self.modality_names, "modality_latent_dim")
        self.gcns = nn.ModuleDict({
            name: ModalityGCN(self.n_users, self.modality_feature(name).shape[1], int(latent[name]),
                              self.embedding_size, int(config["n_layers"]))
            for name in self.modality_names})

    def forward(self):
        ids = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight], dim=0)
        outputs = [self.gcns[name](self.modality_feature(name), self.mean_adj, self.mean_adj_t, ids)
                   for name in self.modality_names]
        nodes = torch.stack(outputs, dim=0).mean(dim=0)
        return torch.split(nodes, [self.n_users, self.n_items], dim=0)

    def calculate_loss(self, interaction):
        loss, id_penalty = self.bpr_and_id_penalty(interaction)
        preferences = sum(gcn.preference.pow(2).mean() for gcn in self.gcns.values())
        return loss + self.reg_weight * (id_penalty + preferences)
