"""SSR stage (i): split a graph signal into M frequency bands of the user-item graph (docs/ssr.md, "Stage (i)").

Notation (docs/ssr.md): Â = D^-1/2 A D^-1/2 (N x N, no self loops, isolated nodes have all-zero rows),
L = I - Â with eigen-pairs (λ_k, u_k), λ_k in [0, 2]; the signal X is [N, D]; the GFT is C = Uᵀ X and the energy
of mode k is e_k = Σ_f C_kf². Every method returns a tensor ``[M, N, D]`` whose bands sum to X: the last band is
always the residual X - Σ_{m<M-1} band_m, so the sum is exact up to float rounding.

Methods (config ``band_method``):

``eigen``
    The paper's equal-energy GFT bands, exactly as the reference's small-graph path: a dense ``eigh`` of L,
    computed once per graph (and dtype/device) and cached; modes sorted by λ; border j is the number of modes
    whose cumulative energy share is < j/M (the mode where the share crosses j/M opens band j); band m =
    U_m U_mᵀ X. Each band then carries 1/M of the energy to within one mode's energy. Refuses (ValueError)
    above ``eigen_max_nodes`` nodes: it needs several dense N x N matrices.

``chebyshev``
    The scalable equal-energy bands (our addition; docs/ssr.md "Stage (i)"). Let L̃ = L - I = -Â
    (spectrum in [-1, 1]) and μ_k = Σ_f x_fᵀ T_k(L̃) x_f = ∫ T_k(λ-1) dE(λ) the Chebyshev moments of the
    signal's spectral energy distribution E(λ) = Σ_k e_k δ(λ - λ_k). The kernel-polynomial method (Jackson
    damping g_k) turns μ_0..μ_K into a smoothed energy CDF

        F(a) = Σ_{k=0..K} g_k s_k(a) μ_k / μ_0,  s_0(a) = (π - θ)/π,  s_k(a) = -2 sin(kθ)/(kπ),  θ = arccos a,

    where s_k(a) are the Chebyshev coefficients of the step 1{x < a}. Band edges a_j (λ_j = 1 + a_j) solve
    F(a_j) = j/M. The filters are the same Jackson-damped steps, G_j(x) = Σ_k g_k s_k(a_j) T_k(x), and the bands
    are h_m = G_{m+1} - G_m with G_0 = 0, G_M = 1: a partition of unity (Σ_m h_m = 1), each h_m in [0, 1]
    (the Jackson kernel is positive). Because F is exactly the energy the low-pass G_j keeps,
    ⟨X, h_m(L) X⟩ = F(a_{m+1}) - F(a_m) = 1/M: the bands are equal-energy in the projection sense *exactly*
    (up to the float32 moments), with smooth transitions of width ~π/(K+2) in arccos(λ - 1).
    Against exact ``eigen`` bands (benchmarks/spectral_scaling.md, N = 4000, D = 192): edges within 0.008 in λ
    at K = 32, and a fraction ≈ 1.55(M-1)/K of the energy is assigned differently (the soft transitions; 9.5%
    for M = 3 at K = 32, 4.9% at K = 64). A point mass of energy at one eigenvalue is split between two bands in
    proportion to the responses, never mode by mode. This matters at λ = 1, whose multiplicity is
    >= |#users - #items| (null space of Â): with Amazon-Baby's user:item ratio (2.75) a random graph of 2000 nodes
    has 47% of its modes and 39% of a smooth signal's energy there, an M = 3 edge falls on it, and ``eigen``
    splits that eigenspace by mode order, i.e. by whatever basis ``eigh`` returns (not a function of L); the
    bands then differ from ``chebyshev``'s by ~22-29% of the energy whatever K.
    Cost: ⌈K/2⌉ sparse products for the moments (μ_{2j} = 2⟨T_j X, T_j X⟩ - μ_0 and
    μ_{2j+1} = 2⟨T_{j+1} X, T_j X⟩ - μ_1) plus K for the filters, each O(nnz · D); memory O((M + 3) N D).
    No dense N x N matrix is ever formed; only ``addmm`` with the sparse Â is used. Edges come from the
    detached signal; the filtering is differentiable in X (custom autograd; the backward is a Clenshaw
    recurrence with the same K sparse products).

``reference``
    The authors' fixed Chebyshev bank of L̃ = L - I (their large-graph path; not equal-energy). M = 3:
    low = T_0 - 0.5 T_1 = (I + 0.5Â) X, mid = 0.8 T_2 + 0.3 T_3 = (-0.8I + 0.9Â + 1.6Â² - 1.2Â³) X (orders above 3
    unused whatever ``k_poly``; terms above ``k_poly`` dropped), high = X - low - mid.
    M != 3: band 0 = T_0 - 0.5 T_1; the orders 2..K (K = ``k_poly``) are dealt round-robin to the M - 2 middle
    bands (middle band i gets orders [2..K][i::M-2], despite the reference's comment saying "contiguous") with
    coefficient 0.8 · 0.375^j for the j-th order it receives; the last band is the residual. M = 2 gives
    [low, X - low]; middle bands left without an order (K - 1 < M - 2) are zero.

``auto``
    ``eigen`` when N <= ``eigen_max_nodes``, else ``chebyshev``.

Edge caching (config ``band_refresh_every``, ``band_track_edges``): the edges are estimated exactly from the
current signal every ``refresh_every`` calls (1 = every call, the default; 0 = only on the first call). On the
other calls, with ``track_edges`` (default) the edges are re-solved from the moments that the previous call's
filtering pass measured for free (⌈K/2⌉ extra dot products, no sparse product), i.e. they lag the signal by one
call; without it they stay frozen. So a ``chebyshev`` call costs 1.5·K sparse products on a refresh and K
otherwise. (``eigen`` gets the energies free with the GFT: with ``track_edges`` its borders always follow the
current signal.) With an ``edge_signal`` the free moments are not those of the edge signal: the edges stay frozen
between refreshes. :meth:`SpectralBandDecomposer.refresh` forces an exact estimate on the next call (e.g. before
an evaluation).

Layout: :mod:`.polynomial` (kernel-polynomial maths), :mod:`.filter_bank` (the sparse filter bank and its
autograd, full and row-restricted), one file per method (:mod:`.eigen`, :mod:`.chebyshev`, :mod:`.reference`, all
:class:`~.base.BandMethod`), :mod:`.state` (the band-edge state :class:`~.state.BandState`) and :mod:`.decomposer`
(:class:`SpectralBandDecomposer`, the module SSR uses).

Energy shares (diagnostics, :func:`band_energy_shares`): the default ``'projection'`` share of band m is
⟨X, band_m⟩ / ‖X‖² = Σ_k h_m(λ_k) e_k / Σ_k e_k, the exact GFT energy the band's filter response assigns to it;
for ``eigen`` it is exactly the GFT energy of the band's modes, the shares always sum to 1 (the bands sum to X),
and for the ``reference`` bank they can be negative (its responses change sign).
"""


from recbole_ssr.model.spectral.decomposer import BAND_METHODS, SpectralBandDecomposer
from recbole_ssr.model.spectral.filter_bank import Workspace, band_energy_shares, chebyshev_moments
from recbole_ssr.model.spectral.polynomial import (equal_energy_edges, jackson_damping, reference_coefficients,
                                                   step_coefficients)
from recbole_ssr.model.spectral.state import BandState

__all__ = [
    "SpectralBandDecomposer",
    "BandState",
    "band_energy_shares",
    "reference_coefficients",
    "equal_energy_edges",
    "jackson_damping",
    "step_coefficients",
    "chebyshev_moments",
    "Workspace",
    "BAND_METHODS",
]
