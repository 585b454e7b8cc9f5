"""SSR stage (i): split a graph signal into M frequency bands of the user-item graph (docs/ssr.md, "Stage (i)").

Notation (docs/ssr.md): Â = D^-1/2 A D^-1/2 (N x N, no self loops, isolated nodes have all-zero rows),
L = I - Â with eigen-pairs (λ_k, u_k), λ_k in [0, 2]; the signal X is [N, D]; the GFT is C = Uᵀ X and the energy
of mode k is e_k = Σ_f C_kf². Every method returns a tensor ``[M, N, D]`` whose bands sum to X: the last band is
always the residual X - Σ_{m<M-1} band_m, so the sum is exact up to float rounding.

Methods (config ``band_method``), one file each, all :class:`~.base.BandMethod`:

* ``eigen`` (:mod:`.eigen`): the paper's equal-energy GFT bands from a dense eigendecomposition (small graphs;
  refused above ``eigen_max_nodes`` nodes).
* ``chebyshev`` (:mod:`.chebyshev`): the scalable equal-energy bands of the kernel-polynomial method, degree
  ``cheb_order``; sparse products only.
* ``reference`` (:mod:`.reference`): the authors' fixed Chebyshev bank (not equal-energy).
* ``auto``: ``eigen`` when N <= ``eigen_max_nodes``, else ``chebyshev``.

Edge caching (``band_refresh_every``, ``band_track_edges``): the edges are estimated exactly from the current signal
every ``refresh_every`` calls (1 = every call, the default; 0 = only on the first call). In between, with
``track_edges`` (default) they are re-solved from the moments the previous call's filtering measured for free (they
lag the signal by one call); without it they stay frozen. :meth:`SpectralBandDecomposer.refresh` forces an exact
estimate on the next call (e.g. before an evaluation).

Layout: :mod:`.polynomial` (kernel-polynomial maths), :mod:`.filter_bank` (the sparse filter bank and its autograd,
full and row-restricted), :mod:`.polynomial_bands` (the base of the polynomial methods), :mod:`.state` (the band-edge
state) and :mod:`.decomposer` (:class:`SpectralBandDecomposer`, the module SSR uses).

Energy shares (diagnostics, :func:`band_energy_shares`): the ``'projection'`` share of band m is
⟨X, band_m⟩ / ‖X‖² = Σ_k h_m(λ_k) e_k / Σ_k e_k: for ``eigen`` exactly the GFT energy of the band's modes; the
shares always sum to 1; for the ``reference`` bank they can be negative (its responses change sign).
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
