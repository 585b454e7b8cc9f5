"""SSR stages (ii)-(iv) as modules: band masking, G-HSNO + band gating, band-wise cross-modal InfoNCE.

Shapes: B nodes (a batch of users or items), M bands, D = (number of modalities incl. id) x d features.
Equations follow docs/ssr.md ("Stage (ii)", "Stage (iii)", "Stage (iv)"); notation there.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def draw_band_keep(num_nodes, num_bands, mask_rate, device=None, generator=None):
    """Stage (ii) mask: keep [B, M] bool, each band kept with probability 1 - p; a node that would lose every band
    keeps its lowest band (band 0)."""
    keep = torch.rand((num_nodes, num_bands), device=device, generator=generator) >= mask_rate
    keep[:, 0] |= ~keep.any(dim=1)
    return keep


def mask_bands(bands, mask_rate, fill="zero", generator=None, keep=None):
    """Stage (ii): drop whole bands per node with probability p, keep ≥ 1 band, rescale kept bands by 1/(1-p).

    Args:
        bands: ``[B, M, D]``.
        mask_rate: p in [0, 1).
        fill: ``'zero'`` (dropped bands are 0) or ``'noise'`` (dropped bands are replaced by N(0, 1) noise).
        keep: a mask from :func:`draw_band_keep` to apply (default: drawn here).
    Returns:
        ``(masked [B, M, D], keep [B, M] bool)``. A node that would lose every band keeps its lowest band (band 0).
    """
    if mask_rate <= 0:
        return bands, torch.ones(bands.shape[:2], dtype=torch.bool, device=bands.device)
    if keep is None:
        keep = draw_band_keep(bands.shape[0], bands.shape[1], mask_rate, bands.device, generator)
    scale = keep.to(bands.dtype).unsqueeze(-1) / (1.0 - mask_rate)
    masked = bands * scale
    if fill == "noise":
        masked = masked + (~keep).to(bands.dtype).unsqueeze(-1) * torch.randn_like(bands)
    elif fill != "zero":
        raise ValueError(f"mask_fill must be 'zero' or 'noise', got '{fill}'")
    return masked, keep


class BandOperator(nn.Module):
    """Stage (iii) G-HSNO: low-rank cross-band kernel, rank-wise gains, node-conditioned scale.

    K = W_q W_kᵀ / √r (W_q, W_k ∈ R^{M×r}); S = softmax over the output-band index (column-stochastic);
    Ỹ_m = Σ_n S[m, n] Y_n; g = Σ_r ρ_r exp(0.1 tanh Λ_r) (ρ = softmax router, Λ_r ∈ R^D);
    s(x) = σ(W_b ReLU(W_a x)) with a D/4 bottleneck; Y'_m = s(x) ⊙ g ⊙ Ỹ_m; Ω = mean(K²) + mean(Λ²).

    Initialisation as the authors' reference (docs/ssr.md, "Stage (iii)"): W_q, W_k xavier-normal (std
    √(2/(M+r)), so that K and the mixing S start away from uniform; a small init keeps K ≈ 0 under Ω and S stays
    uniform, which silences the operator), Λ ~ N(0, 1), router logits 0 (ρ uniform).
    """

    def __init__(self, num_bands, dim, rank):
        super().__init__()
        self.rank = rank
        self.w_q = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_bands, rank)))
        self.w_k = nn.Parameter(nn.init.xavier_normal_(torch.empty(num_bands, rank)))
        self.gain_logits = nn.Parameter(torch.randn(rank, dim))  # Λ
        self.router = nn.Parameter(torch.zeros(rank))  # ρ = softmax(router)
        hidden = max(1, dim // 4)
        self.scale = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Sigmoid())

    def kernel(self):
        return self.w_q @ self.w_k.T / math.sqrt(self.rank)

    def mixing(self):
        """S: column-stochastic M×M band-mixing matrix (each column sums to 1), rank of K ≤ r."""
        return torch.softmax(self.kernel(), dim=0)

    def gains(self):
        ranks = torch.exp(0.1 * torch.tanh(self.gain_logits))  # G_r
        return (torch.softmax(self.router, dim=0).unsqueeze(1) * ranks).sum(dim=0)  # g

    def node_scale(self, node):
        """s(x) [B, D]: depends on the node only, so a masked pass can reuse the clean pass's value."""
        return self.scale(node)

    def forward(self, bands, node, node_scale=None):
        """Y' [B, M, D] of bands [B, M, D]; ``node_scale`` = :meth:`node_scale` of ``node`` if already known."""
        scale = self.node_scale(node) if node_scale is None else node_scale
        mixed = torch.einsum("mn,bnd->bmd", self.mixing(), bands)
        return (scale * self.gains()).unsqueeze(1) * mixed

    def regularizer(self):
        return self.kernel().pow(2).mean() + self.gain_logits.pow(2).mean()


class BandGate(nn.Module):
    """Stage (iii) gating: w_m = 1 + γ tanh(ℓ_m), ℓ = MLP([x; mean_m Y'_m]); norm rescaling ‖p‖/‖q‖.

    Returns the aggregated embedding h = q ‖p‖/‖q‖ (p = Σ Y'_m, q = Σ w_m Y'_m), the per-band embedding
    h_spec = concat_m(w_m Y'_m) ‖p‖/‖q‖, and the gate weights w [B, M]. The MLP's hidden width is D/4 and its last
    layer starts near 0 (w ≈ 1), as in the authors' reference.
    """

    def __init__(self, num_bands, dim, gamma_init=0.1):
        super().__init__()
        self.dim = dim
        hidden = max(1, dim // 4)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, num_bands))
        nn.init.normal_(self.mlp[-1].weight, std=1e-3)  # last layer near 0: w ≈ 1 at the start
        nn.init.zeros_(self.mlp[-1].bias)
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))

    def node_logits(self, node):
        """The node's part of the first layer, W_x x + b (W = [W_x | W_c]); a masked pass reuses it."""
        first = self.mlp[0]
        return F.linear(node, first.weight[:, :self.dim], first.bias)

    def forward(self, bands, node, node_logits=None):
        """(h, h_spec, w) of bands [B, M, D]; ``node_logits`` = :meth:`node_logits` of ``node`` if already known.
        W [x; c] + b is evaluated as (W_x x + b) + W_c c, the same affine map."""
        first = self.node_logits(node) if node_logits is None else node_logits
        first = first + F.linear(bands.mean(dim=1), self.mlp[0].weight[:, self.dim:])
        logits = self.mlp[2](self.mlp[1](first))
        weights = 1.0 + self.gamma * torch.tanh(logits)
        return gate_and_rescale(bands, weights) + (weights,)


def gate_and_rescale(bands, weights, eps=1e-6):
    """(h, h_spec) for band weights ``[B, M]`` (all ones = the plain band sum); the rescaling is
    (‖p‖ + ε) / (‖q‖ + ε) with ε = 1e-6, as in the reference."""
    weighted = bands * weights.unsqueeze(-1)
    p, q = bands.sum(dim=1), weighted.sum(dim=1)
    ratio = (p.norm(dim=-1, keepdim=True) + eps) / (q.norm(dim=-1, keepdim=True) + eps)
    return q * ratio, weighted.flatten(1) * ratio


def band_contrastive_loss(bands, chunk_slices, temperature, self_negative=False):
    """Stage (iv): band-wise cross-modal InfoNCE over every pair of content modalities.

    For modalities (a, b): anchors are the L2-normalised a-chunks of every (node, band) row; the positive of
    (n, m, a) is (n, m, b) - same node, same band, other modality; the negatives are every other (node, band)
    chunk of both modalities. Symmetric (a→b and b→a), averaged over pairs. ``bands`` is ``[B, M, D]``;
    ``chunk_slices`` the column slices of the content modalities. Fewer than two content modalities: 0.
    ``self_negative``: the anchor's own a-chunk also stays among its negatives (the authors' reference: a
    constant exp(1/τ) in every denominator); False (ours) leaves it out.
    """
    if len(chunk_slices) < 2:
        return bands.new_zeros(())
    flat = bands.reshape(-1, bands.shape[-1])
    chunks = [F.normalize(flat[:, s], dim=-1) for s in chunk_slices]
    total, pairs = bands.new_zeros(()), 0
    for i in range(len(chunks)):
        for j in range(i + 1, len(chunks)):
            total = total + _two_view_nce(chunks[i], chunks[j], temperature, self_negative)
            total = total + _two_view_nce(chunks[j], chunks[i], temperature, self_negative)
            pairs += 2
    return total / pairs


def _two_view_nce(anchors, others, temperature, self_negative=False):
    """-log exp(a_k·b_k/τ) / (Σ_j exp(a_k·b_j/τ) + Σ_{j≠k} exp(a_k·a_j/τ)); with ``self_negative`` the second sum
    runs over every j, the anchor itself (a_k·a_k = 1) included."""
    cross = anchors @ others.T / temperature
    same = anchors @ anchors.T / temperature
    if not self_negative:
        same = same.masked_fill(torch.eye(len(anchors), dtype=torch.bool, device=anchors.device), float("-inf"))
    logits = torch.cat([cross, same], dim=1)
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))
