"""SMORE: Spectrum-based Modality Representation Fusion Graph Convolutional Network (Ong & Khong, WSDM 2025).

MGCN's three-view design with a frequency-domain front end (components named as in the paper; behaviour as in the
authors' code):

1. **Spectral denoising and fusion**: each modality is projected, F_m = W_m x_m + b_m (d-dim), and
   transformed along the *feature* dimension, Z_m = rFFT(F_m) (orthonormal, d/2 + 1 bins). A learnable complex
   filter per modality denoises it, F̃_m = irFFT(Z_m ⊙ W_m); the cross-modal fusion is the product of the spectra
   (a convolution of the signals) under its own filter, F̃_f = irFFT((Π_m Z_m) ⊙ W_f).
2. **Purification** (MGCN): Ẽ_m = E_id ⊙ σ(W_g,m F̃_m + b), Ẽ_f = E_id ⊙ σ(W_g,f F̃_f + b).
3. **Views**: LightGCN over Â (``n_ui_layers``) -> E_ui; per modality ``n_layers`` products with the
   frozen cosine-weighted kNN item graph S_m (``knn_k`` neighbours), the fusion view over the fusion graph
   S_f = element-wise max of the S_m (union of their edges); users Ē_u = R̂ Ē_i (R̂ = user-item block of Â).
4. **Modality-aware preference**: the fusion view attends over each modality view,
   A_m = softmax_d(W_2 tanh(W_1 Ē_f + b)) ⊙ Ē_m (softmax over the embedding dimension); behaviour gates
   P = dropout(σ(W_p E_ui + b)); side = mean(P_1 ⊙ A_1, ..., P_M ⊙ A_M, P_f ⊙ Ē_f); final = E_ui + side.
5. **Loss**: BPR + ``cl_loss`` · InfoNCE(side, E_ui) (positive items + users, τ = ``cl_temperature``) +
   ``reg_weight`` · ½Σ‖e‖²/B.

Generalisation beyond image + text: one filter, purifier, kNN graph, attention query and gate per modality; the
fusion filter acts on the product of *all* modalities' spectra and the fusion graph is the max over *all* modality
graphs; the side view averages the M modality parts and the fusion part (M = 2 is the paper). ``knn_k`` is a
number or a ``{modality: k, default: k}`` mapping (the authors' ``image_knn_k`` / ``text_knn_k``). With one modality
the fusion spectrum is that modality's spectrum under the fusion filter and the fusion graph is its kNN graph.
Filters start as complex N(0, 1) like the authors' (``spectral_filter_init: randn``) or as the identity
(``identity``: W = 1 + 0j, i.e. the filter initially passes the signal unchanged). As in the authors' code the raw
feature tables are fine-tuned (``finetune_features``).
"""

import torch
from torch import nn

from recbole_ssr.errors import ConfigError
from recbole_ssr.model.abstract import MultimodalRecommender
from recbole_ssr.model.losses import bpr_loss, info_nce, l2_penalty
from recbole_ssr.model.layers import FeatureTables, lightgcn_propagate, weighted_knn_item_graph
from recbole_ssr.model.layers import per_modality, propagate, sparse_max, user_item_block

FUSION = "_fusion"  # key of the fusion view next to the modality names


def gate(dim):
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


class SpectralFilter(nn.Module):
    """A learnable complex filter W over the d/2 + 1 rFFT bins of a d-dim signal: irFFT(rFFT(x) ⊙ W).

    ``apply`` filters a signal; ``filter_spectrum`` filters a given spectrum (the fusion product) and returns the
    real signal. Weights are stored as real pairs [bins, 2] (``torch.view_as_complex``).
    """

    def __init__(self, dim, init="randn"):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.zeros(dim // 2 + 1, 2))
        if init == "randn":
            nn.init.normal_(self.weight)
        elif init == "identity":
            self.reset_identity()
        else:
            raise ConfigError(f"spectral_filter_init must be 'randn' or 'identity', got '{init}'.")

    def reset_identity(self):
        with torch.no_grad():
            self.weight.zero_()
            self.weight[:, 0] = 1.0

    @staticmethod
    def spectrum(signal):
        return torch.fft.rfft(signal, dim=-1, norm="ortho")

    def filter_spectrum(self, spectrum):
        return torch.fft.irfft(spectrum * torch.view_as_complex(self.weight), n=self.dim, dim=-1, norm="ortho")

    def forward(self, signal):
        return self.filter_spectrum(self.spectrum(signal))


class SMORE(MultimodalRecommender):
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
        graphs = {name: weighted_knn_item_graph(self, name, knn_k[name]) for name in self.modality_names}
        graphs[FUSION] = sparse_max(list(graphs.values()))
        for name, graph in graphs.items():
            self.register_buffer(f"item_graph_{name}", graph, persistent=False)

        finetune = bool(config["finetune_features"])
        views = self.modality_names + [FUSION]
        self.features = FeatureTables(self.modality_features, trainable=finetune)
        self.projection = nn.ModuleDict({
            name: nn.Linear(self.modality_feature(name).shape[1], dim) for name in self.modality_names})
        init = config["spectral_filter_init"] or "randn"
        self.filters = nn.ModuleDict({name: SpectralFilter(dim, init) for name in views})
        self.purifier = nn.ModuleDict({name: gate(dim) for name in views})
        self.preference = nn.ModuleDict({name: gate(dim) for name in views})
        self.query = nn.ModuleDict({
            name: nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim, bias=False))
            for name in self.modality_names})
        self.dropout = nn.Dropout(config["dropout"])

    def spectral_signals(self):
        """Denoised modality signals F̃_m and the fused signal F̃_f, as ``{name: [n_items, d]}``."""
        spectra = {name: SpectralFilter.spectrum(self.projection[name](self.features[name]))
                   for name in self.modality_names}
        signals = {name: self.filters[name].filter_spectrum(z) for name, z in spectra.items()}
        product = spectra[self.modality_names[0]]
        for name in self.modality_names[1:]:
            product = product * spectra[name]
        signals[FUSION] = self.filters[FUSION].filter_spectrum(product)
        return signals

    def item_item_view(self, name, signal):
        """Purified item IDs over the view's item graph, lifted to users: [R̂ Ē_i ; Ē_i]."""
        purified = self.item_id_embedding.weight * self.purifier[name](signal)
        items = propagate(getattr(self, f"item_graph_{name}"), purified, self.n_layers)
        return torch.cat([torch.sparse.mm(self.user_item, items), items], dim=0)

    def views(self):
        """(final, side, content) embeddings of all nodes, users first."""
        content = torch.cat(lightgcn_propagate(self.norm_adj, self.user_embedding.weight,
                                               self.item_id_embedding.weight, self.n_ui_layers), dim=0)
        views = {name: self.item_item_view(name, signal) for name, signal in self.spectral_signals().items()}
        fusion = views[FUSION]
        parts = []
        for name in self.modality_names:
            attended = torch.softmax(self.query[name](fusion), dim=-1) * views[name]
            parts.append(self.dropout(self.preference[name](content)) * attended)
        parts.append(self.dropout(self.preference[FUSION](content)) * fusion)
        side = torch.stack(parts, dim=0).mean(dim=0)
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
