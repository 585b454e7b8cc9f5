"""``chebyshev`` bands: scalable equal-energy bands from the kernel-polynomial method (our addition; docs/ssr.md,
"Stage (i)").

Let L̃ = L - I = -Â (spectrum in [-1, 1]) and μ_k = Σ_f x_fᵀ T_k(L̃) x_f = ∫ T_k(λ-1) dE(λ) the Chebyshev moments
of the signal's spectral energy distribution E(λ) = Σ_k e_k δ(λ - λ_k). The kernel-polynomial method (Jackson
damping g_k) turns μ_0..μ_K into a smoothed energy CDF (:func:`~recbole_ssr.model.spectral.polynomial.soft_cdf`)

    F(a) = Σ_{k=0..K} g_k s_k(a) μ_k / μ_0,  s_0(a) = (π - θ)/π,  s_k(a) = -2 sin(kθ)/(kπ),  θ = arccos a,

where s_k(a) are the Chebyshev coefficients of the step 1{x < a}. Band edges a_j (λ_j = 1 + a_j) solve
F(a_j) = j/M (:func:`~recbole_ssr.model.spectral.polynomial.equal_energy_edges`). The filters are the same
Jackson-damped steps, G_j(x) = Σ_k g_k s_k(a_j) T_k(x), and the bands are h_m = G_{m+1} - G_m with G_0 = 0,
G_M = 1 (:func:`~recbole_ssr.model.spectral.polynomial.band_coefficients`): a partition of unity, each h_m in
[0, 1] (the Jackson kernel is positive). Because F is exactly the energy the low-pass G_j keeps,
⟨X, h_m(L) X⟩ = F(a_{m+1}) - F(a_m) = 1/M: the bands are equal-energy in the projection sense exactly (up to the
float32 moments), with smooth transitions of width ~π/(K+2) in arccos(λ - 1); benchmarks/spectral_scaling.md
measures how far they are from the exact ``eigen`` bands as K grows.

A point mass of energy at one eigenvalue is split between two bands in proportion to the responses, never mode by
mode. This matters at λ = 1, whose multiplicity is >= |#users - #items| (the null space of Â): where an edge falls
there, ``eigen`` splits that eigenspace by mode order, i.e. by whatever basis ``eigh`` returns (not a function of
L), and the two methods differ by more than the transitions alone explain.

Cost: ⌈K/2⌉ sparse products for the moments (μ_{2j} = 2⟨T_j X, T_j X⟩ - μ_0, μ_{2j+1} = 2⟨T_{j+1} X, T_j X⟩ - μ_1)
plus K for the filters, each O(nnz · D); memory O((M + 3) N D); no dense N x N matrix. Edges come from the
detached signal; the filtering is differentiable in X (:mod:`~recbole_ssr.model.spectral.filter_bank`).
"""

import numpy as np
import torch

from recbole_ssr.model.spectral.filter_bank import chebyshev_moments
from recbole_ssr.model.spectral.polynomial import band_coefficients, equal_energy_edges, jackson_damping, soft_cdf
from recbole_ssr.model.spectral.polynomial_bands import PolynomialBands


class ChebyshevBands(PolynomialBands):
    """Equal-energy bands of degree K = ``order`` (module doc). Edges are estimated exactly (⌈K/2⌉ sparse
    products for the moments) when the state is due (``refresh_every``); in between, with ``track_edges``, they
    are re-solved from the moments the previous filtering pass measured for free, else kept."""

    name = "chebyshev"

    def __init__(self, adj, num_bands, order=32, refresh_every=1, track_edges=True, col_chunk=None):
        super().__init__(adj, num_bands, col_chunk)
        self.order, self.refresh_every, self.track_edges = int(order), refresh_every, track_edges

    def update_edges(self, x, state, edge_signal, adj):
        if state.due(self.refresh_every) or state.coefficients is None:
            signal = x.detach() if edge_signal is None else edge_signal.detach().to(x.dtype)
            self.set_edges(state, chebyshev_moments(adj, signal, self.order, self.col_chunk))
            state.stale = False
        elif self.track_edges and state.free_moments is not None:
            self.set_edges(state, state.free_moments)
        state.free_moments = None
        if self.track_edges and edge_signal is None and not state.due(self.refresh_every, state.calls + 1):
            return np.zeros(self.order + 1)  # filled by the filter pass, used by the next call
        return None

    def set_edges(self, state, moments):
        state.moments = np.asarray(moments, dtype=np.float64)
        edges = equal_energy_edges(state.moments, self.num_bands)
        state.coefficients = band_coefficients(edges, self.order)
        state.band_edges = torch.as_tensor(1.0 + edges, dtype=torch.float64)

    @staticmethod
    def energy_cdf(lam, state):
        """Estimated fraction of the signal energy at eigenvalues <= λ (the KPM CDF of ``state.moments``)."""
        if state.moments is None:
            raise RuntimeError("energy_cdf needs the chebyshev moments: call a 'chebyshev' decomposer first")
        mu = state.moments / state.moments[0] if state.moments[0] > 0 else state.moments
        theta = np.arccos(np.clip(np.asarray(lam, dtype=np.float64) - 1.0, -1.0, 1.0))
        return soft_cdf(theta, mu, jackson_damping(len(mu) - 1))
