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

from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.abstract import MultiViewRecommender
from recbole_ssr.model.graph import sparse_max
from recbole_ssr.model.layers import gate

FUSION = "_fusion"  # key of the fusion view next to the modality names


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


class SMORE(MultiViewRecommender):
    """Views, ID embeddings, graphs and loss: :class:`~recbole_ssr.model.abstract.MultiViewRecommender`; here the
    spectral front end (1), the purifiers (2), the fusion graph (3) and the modality-aware preference (4)."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = self.embedding_size
        fusion_graph = sparse_max([getattr(self, f"item_graph_{name}") for name in self.modality_names])
        self.register_buffer(f"item_graph_{FUSION}", fusion_graph, persistent=False)
        views = self.modality_names + [FUSION]
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

    def views(self):
        """(final, side, content) embeddings of all nodes, users first."""
        content = self.content()
        views = {name: self.item_item_view(name, self.item_id_embedding.weight * self.purifier[name](signal))
                 for name, signal in self.spectral_signals().items()}
        fusion = views[FUSION]
        parts = []
        for name in self.modality_names:
            attended = torch.softmax(self.query[name](fusion), dim=-1) * views[name]
            parts.append(self.dropout(self.preference[name](content)) * attended)
        parts.append(self.dropout(self.preference[FUSION](content)) * fusion)
        side = torch.stack(parts, dim=0).mean(dim=0)
        return content + side, side, content
