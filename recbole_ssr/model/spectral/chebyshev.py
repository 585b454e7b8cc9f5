"""``chebyshev`` bands: scalable equal-energy bands from the kernel-polynomial method (docs/ssr.md, "Stage (i)").

The Chebyshev moments μ_0..μ_K of the signal give a smoothed energy CDF F (:func:`~recbole_ssr.model.spectral.
polynomial.soft_cdf`); the band edges a_j solve F(a_j) = j/M (:func:`~recbole_ssr.model.spectral.polynomial.
equal_energy_edges`) and the filters are the Jackson-damped steps at those edges, h_m = G_{m+1} - G_m
(:func:`~recbole_ssr.model.spectral.polynomial.band_coefficients`), applied by the sparse filter bank
(:mod:`~recbole_ssr.model.spectral.filter_bank`). :class:`PolynomialBands` is the part shared with the fixed
``reference`` bank.
"""

import time

import numpy as np
import torch

from recbole_ssr.model.spectral.base import BandMethod
from recbole_ssr.model.spectral.filter_bank import Workspace, band_energy_shares, chebyshev_moments, filter_bands
from recbole_ssr.model.spectral.polynomial import (band_coefficients, equal_energy_edges, jackson_damping,
                                                   shares_from_moments, soft_cdf)


class PolynomialBands(BandMethod):
    """Bands from a polynomial filter bank in L - I whose coefficients live in ``state.coefficients``; a subclass
    decides them in :meth:`update_edges`. ``col_chunk``: signal columns per filtering pass."""

    supports_rows = True

    def __init__(self, adj, num_bands, col_chunk=None):
        super().__init__(adj, num_bands)
        self.col_chunk = col_chunk
        self.workspace = Workspace()

    def update_edges(self, x, state, edge_signal, adj):
        """Set ``state.coefficients`` for this call; return a zero float64 array for the filtering pass to collect
        the signal's moments into (used by the next call), or None."""
        return None

    def decompose(self, x, state, edge_signal=None, rows=None):
        adj = self.adjacency(x.device, x.dtype)
        start = time.perf_counter()
        free = self.update_edges(x, state, edge_signal, adj)
        mid = time.perf_counter()
        coefficients = np.asarray(state.coefficients, dtype=np.float64)
        bands = filter_bands(x, adj, coefficients, self.col_chunk, free, rows,
                             self.workspace if rows is not None else None)
        state.free_moments = free
        end = time.perf_counter()
        if rows is None:
            state.energy_shares = band_energy_shares(bands, x)
        elif free is not None:
            state.energy_shares = torch.as_tensor(shares_from_moments(coefficients, free), dtype=torch.float64)
        else:
            state.energy_shares = None
        state.timings = {"edges_s": mid - start, "filter_s": end - mid, "shares_s": time.perf_counter() - end}
        return bands

    def responses(self, lam, state):
        """The polynomial responses h_m(λ) (they sum to 1)."""
        if state.coefficients is None:
            raise RuntimeError("call the decomposer once before asking for chebyshev band responses")
        resp = np.polynomial.chebyshev.chebval(lam - 1.0, np.asarray(state.coefficients).T)  # [M-1, len]
        return np.vstack([resp, 1.0 - resp.sum(0, keepdims=True)])


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
