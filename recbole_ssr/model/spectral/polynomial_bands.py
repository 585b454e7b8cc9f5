"""The base of the polynomial band methods (``chebyshev``, ``reference``): bands from a polynomial filter bank in
L̃ = L - I, applied by the sparse filter bank (:mod:`~recbole_ssr.model.spectral.filter_bank`); each method only
decides the coefficients."""

import time

import numpy as np
import torch

from recbole_ssr.model.spectral.base import BandMethod
from recbole_ssr.model.spectral.filter_bank import Workspace, band_energy_shares, filter_bands
from recbole_ssr.model.spectral.polynomial import shares_from_moments


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
