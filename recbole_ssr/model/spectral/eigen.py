"""``eigen`` bands: the paper's equal-energy GFT bands from a dense eigendecomposition (small graphs only).

The eigen-pairs (λ_k, u_k) of L = I - Â are computed once per graph (and dtype/device) and cached; modes are
sorted by λ; with the GFT C = Uᵀ X and the mode energies e_k = Σ_f C_kf², border j is the number of modes whose
cumulative energy share is < j/M (the mode where the share crosses j/M opens band j); band m = U_m U_mᵀ X, the last
band the residual. Each band carries 1/M of the energy to within one mode's energy (docs/ssr.md, "Stage (i)").
"""

import time

import numpy as np
import torch

from recbole_ssr.model.spectral.base import BandMethod


def _eigh(matrix, single_thread_below=2048):
    """``torch.linalg.eigh``; single-threaded for small matrices: on a shared, oversubscribed CPU a multi-threaded
    LAPACK eigh of a few hundred to a few thousand rows can be far slower than a single-threaded one. The previous
    thread count is restored."""
    if matrix.device.type != "cpu" or matrix.shape[0] > single_thread_below:
        return torch.linalg.eigh(matrix)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrix)
    finally:
        torch.set_num_threads(threads)


class EigenBands(BandMethod):
    """Exact equal-energy bands (module doc). ``refresh_every``/``track_edges`` as in
    :class:`~recbole_ssr.model.spectral.SpectralBandDecomposer`; the energies come free with the GFT, so with
    ``track_edges`` the borders always follow the current signal. ``dtype``: dtype of the cached basis (a float64
    signal always uses a float64 basis)."""

    name = "eigen"

    def __init__(self, adj, num_bands, refresh_every=1, track_edges=True, dtype=torch.float32):
        super().__init__(adj, num_bands)
        self.refresh_every, self.track_edges, self.dtype = refresh_every, track_edges, dtype
        self._eig_cache = {}

    def eigenbasis(self, device, dtype):
        """(eigenvalues [N], eigenvectors [N, N]) of L = I - Â, ascending; dense, computed once and cached."""
        dtype = torch.float64 if torch.float64 in (dtype, self.dtype) else self.dtype
        key = (torch.device(device), dtype)
        if key not in self._eig_cache:
            cached = next((v for (d, t), v in self._eig_cache.items() if t == dtype), None)
            if cached is None:
                lap = -self.adj.to(dtype=dtype).to_dense()
                lap.diagonal().add_(1.0)
                evals, evecs = _eigh(lap)
                del lap
                cached = (evals, evecs)
            self._eig_cache[key] = tuple(t.to(device) for t in cached)
        return self._eig_cache[key]

    def decompose(self, x, state, edge_signal=None):
        start = time.perf_counter()
        evals, evecs = self.eigenbasis(x.device, x.dtype)
        mid = time.perf_counter()
        basis = evecs.to(x.dtype)
        coeff = basis.T @ x  # GFT, differentiable
        due = state.due(self.refresh_every) or state.borders is None
        if due or (self.track_edges and edge_signal is None):
            with torch.no_grad():
                c = coeff.detach() if edge_signal is None else basis.T @ edge_signal.detach().to(basis.dtype)
                self._set_borders(state, (c.double() ** 2).sum(1), evals)
            state.stale = False
        parts = [basis[:, s:e] @ coeff[s:e] for s, e in zip(state.borders[:-2], state.borders[1:-1])]
        parts.append(x - sum(parts) if parts else x)
        bands = torch.stack(parts)
        with torch.no_grad():
            energy = (coeff.detach().double() ** 2).sum(1)
            total = energy.sum()
            shares = torch.stack([energy[s:e].sum() for s, e in zip(state.borders[:-1], state.borders[1:])])
            state.energy_shares = (shares / total if total > 0 else torch.zeros_like(shares)).cpu()
        state.timings = {"eigh_s": mid - start, "bands_s": time.perf_counter() - mid}
        return bands

    def _set_borders(self, state, energy, evals):
        """Borders where the cumulative energy share crosses j/M; λ-edges halfway between the neighbouring modes."""
        total = float(energy.sum())
        n, m = self.num_nodes, self.num_bands
        if total > 0:
            cum = torch.cumsum(energy, 0) / total
            targets = torch.arange(1, m, dtype=torch.float64, device=cum.device) / m
            inner = torch.searchsorted(cum, targets, right=False).tolist()  # #{k: cum_k < j/M}
        else:
            inner = [n * j // m for j in range(1, m)]
        state.borders = [0] + [min(int(b), n) for b in inner] + [n]
        lam = evals.detach().double().cpu()
        state.band_edges = torch.tensor(
            [0.5 * (lam[max(b - 1, 0)] + lam[min(b, n - 1)]) for b in state.borders[1:-1]], dtype=torch.float64)

    def responses(self, lam, state):
        """Indicators of the last estimated λ-edges (a degenerate eigenvalue split between two bands is shown in
        the upper one)."""
        if state.band_edges is None:
            raise RuntimeError("call the decomposer once before asking for eigen band responses")
        idx = np.searchsorted(state.band_edges.numpy(), lam, side="right")
        return (idx[None, :] == np.arange(self.num_bands)[:, None]).astype(np.float64)
