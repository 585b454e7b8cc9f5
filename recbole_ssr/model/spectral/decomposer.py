"""The band decomposer SSR uses: picks a band method, checks shapes, keeps the band-edge state."""

import numpy as np
import torch
from torch import nn

from recbole_ssr.model.graph import int32_csr
from recbole_ssr.model.spectral.chebyshev import ChebyshevBands
from recbole_ssr.model.spectral.eigen import EigenBands
from recbole_ssr.model.spectral.reference import ReferenceBands

BAND_METHODS = ("auto", "eigen", "chebyshev", "reference")


def _to_sparse(adj):
    """``adj`` as a torch CSR tensor with 32-bit indices (the fast layout for the filter's products)."""
    if isinstance(adj, torch.Tensor):
        if adj.layout == torch.sparse_csr:
            return int32_csr(adj)
        if adj.layout == torch.sparse_coo:
            return int32_csr(adj.coalesce().to_sparse_csr())
        if adj.layout == torch.strided:
            return int32_csr(adj.to_sparse_csr())
        raise TypeError(f"unsupported sparse layout {adj.layout}: pass COO or CSR")
    try:  # scipy.sparse
        coo = adj.tocoo()
    except AttributeError as exc:
        raise TypeError(f"adj must be a torch tensor (sparse COO/CSR) or scipy.sparse matrix, got {type(adj)}") from exc
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    values = torch.as_tensor(coo.data, dtype=torch.float32)
    return int32_csr(torch.sparse_coo_tensor(indices, values, coo.shape).coalesce().to_sparse_csr())


class SpectralBandDecomposer(nn.Module):
    """Decompose graph signals X [N, D] into M frequency bands [M, N, D] that sum to X (docs/ssr.md, "Stage (i)").

    Args:
        adj: Â = D^-1/2 A D^-1/2 of the (training) user-item graph, torch sparse COO/CSR (or scipy.sparse),
            N x N, symmetric, no self loops (spectrum of L = I - Â in [0, 2]; not checked).
        num_bands: M (config ``band_num``), >= 1.
        method: ``'auto' | 'eigen' | 'chebyshev' | 'reference'`` (config ``band_method``; see
            :mod:`recbole_ssr.model.spectral`).
        k_poly: highest Chebyshev order of the ``reference`` bank (config ``k_poly``, reference default 5).
        cheb_order: degree K of the ``chebyshev`` band filters and of the moment expansion (config
            ``cheb_order``); transition width ~π/(K+2) in arccos(λ-1); cost 1.5·K sparse products per call.
        eigen_max_nodes: largest N for the dense ``eigen`` path, and the ``auto`` switch (config
            ``eigen_max_nodes``, reference 5000).
        refresh_every: estimate the band edges exactly every this many calls; 0 = only on the first call (config
            ``band_refresh_every``; see "Edge caching" in :mod:`recbole_ssr.model.spectral`).
        track_edges: between exact estimates, follow the signal with one-call-old free moments (True) or keep
            the edges frozen (False) (config ``band_track_edges``).
        col_chunk: process this many signal columns at a time in the sparse paths (None = all; config
            ``band_col_chunk``); lowers the working memory to (M + 1)·N·D + 3·N·col_chunk floats.
        eigen_dtype: dtype of the cached eigendecomposition (float64 is several times slower); a float64 signal
            always uses a float64 basis.

    ``self.bands`` is the method (:class:`~recbole_ssr.model.spectral.base.BandMethod`), ``self.state`` its
    band-edge state (:class:`~recbole_ssr.model.spectral.state.BandState`). Diagnostics after a call (read from
    the state; all detached, on CPU): ``band_edges`` (λ_1..λ_{M-1}; for ``eigen`` the midpoint between the last
    eigenvalue of band j-1 and the first of band j; None for ``reference``), ``energy_shares`` (projection shares
    of the last call, see :func:`~recbole_ssr.model.spectral.band_energy_shares`), ``moments`` (chebyshev,
    μ_0..μ_K of the signal the edges were estimated from), ``borders`` (eigen, mode indices), ``coefficients``
    (chebyshev / reference, [M-1, K+1] in L - I), ``method`` (the resolved method), ``calls``, ``timings``
    (seconds of the last call's phases: chebyshev/reference ``edges_s``, ``filter_s``, ``shares_s``; eigen
    ``eigh_s`` (0 once cached), ``bands_s``).
    The module has no parameters or buffers (checkpoints stay small); the graph and the eigenbasis are cached
    per (device, dtype) on first use.
    """

    def __init__(self, adj, num_bands=3, method="auto", k_poly=5, cheb_order=32, eigen_max_nodes=5000,
                 refresh_every=1, track_edges=True, col_chunk=None, eigen_dtype=torch.float32):
        super().__init__()
        if method not in BAND_METHODS:
            raise ValueError(f"unknown band_method '{method}': use one of {BAND_METHODS}")
        if int(num_bands) < 1:
            raise ValueError(f"band_num must be >= 1, got {num_bands}")
        if int(cheb_order) < 1:
            raise ValueError(f"cheb_order must be >= 1, got {cheb_order}")
        if int(refresh_every) < 0:
            raise ValueError(f"refresh_every must be >= 0, got {refresh_every}")
        adj = _to_sparse(adj)
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adj must be square N x N, got {tuple(adj.shape)}")
        self.num_nodes = int(adj.shape[0])
        self.num_bands = int(num_bands)
        self.requested_method = method
        self.eigen_max_nodes = int(eigen_max_nodes)
        if method == "auto":
            method = "eigen" if self.num_nodes <= self.eigen_max_nodes else "chebyshev"
        if method == "eigen" and self.num_nodes > self.eigen_max_nodes:
            raise ValueError(
                f"band_method='eigen' needs a dense eigendecomposition of the {self.num_nodes} x {self.num_nodes} "
                f"Laplacian, above eigen_max_nodes={self.eigen_max_nodes} (it would take ~"
                f"{3 * 4 * self.num_nodes ** 2 / 2 ** 30:.1f} GiB and O(N^3) time). Use band_method='chebyshev' "
                f"(scalable equal-energy bands) or 'auto', or raise eigen_max_nodes.")
        self.method = method
        self.k_poly, self.cheb_order = int(k_poly), int(cheb_order)
        self.refresh_every, self.track_edges = int(refresh_every), bool(track_edges)
        if method == "eigen":
            self.bands = EigenBands(adj, num_bands, self.refresh_every, self.track_edges, eigen_dtype)
        elif method == "chebyshev":
            self.bands = ChebyshevBands(adj, num_bands, self.cheb_order, self.refresh_every, self.track_edges,
                                        col_chunk)
        else:
            self.bands = ReferenceBands(adj, num_bands, self.k_poly, col_chunk)
        self.state = self.new_state()

    def new_state(self):
        """A fresh band-edge state (exact edges at its first call)."""
        return self.bands.new_state()

    # -- state (diagnostics) ----------------------------------------------------------------------------------------
    band_edges = property(lambda self: self.state.band_edges)
    energy_shares = property(lambda self: self.state.energy_shares)
    moments = property(lambda self: self.state.moments)
    borders = property(lambda self: self.state.borders)
    coefficients = property(lambda self: self.state.coefficients)
    calls = property(lambda self: self.state.calls)
    timings = property(lambda self: self.state.timings)

    def refresh(self):
        """Force the band edges to be re-estimated on the next call."""
        self.state.stale = True

    def eigenbasis(self, device, dtype):
        """(eigenvalues [N], eigenvectors [N, N]) of L = I - Â, ascending (``eigen`` only; cached)."""
        return self.bands.eigenbasis(device, dtype)

    # -- forward -----------------------------------------------------------------------------------------------
    def _check(self, x, edge_signal=None):
        if x.dim() != 2 or x.shape[0] != self.num_nodes:
            raise ValueError(f"x must be [N={self.num_nodes}, D], got {tuple(x.shape)}")
        if edge_signal is not None and (edge_signal.dim() != 2 or edge_signal.shape[0] != self.num_nodes):
            raise ValueError(f"edge_signal must be [N={self.num_nodes}, D'], got {tuple(edge_signal.shape)}")

    def forward(self, x, edge_signal=None, state=None):
        """Bands [M, N, D] of ``x`` [N, D]; Σ_m bands[m] == x (last band is the residual).

        ``edge_signal`` [N, D'] (optional): estimate the equal-energy edges from this signal instead of ``x``
        (e.g. the reference measures energy on [R | Q] but the project decomposes X = R + Q). Ignored by
        ``reference``. ``state``: the band-edge state to use and update (default: the decomposer's own).
        """
        self._check(x, edge_signal)
        state = self.state if state is None else state
        if self.num_bands == 1:
            bands = x.unsqueeze(0)
            state.energy_shares = torch.ones(1, dtype=torch.float64)
            state.band_edges = torch.zeros(0, dtype=torch.float64)
        else:
            bands = self.bands.decompose(x, state, edge_signal)
        state.calls += 1
        return bands

    def bands_at(self, x, rows):
        """Bands of ``x`` at the node indices ``rows`` as [R, M, D]: equal to ``forward(x)[:, rows].transpose(0, 1)``
        (same edges, same state updates), but the ``chebyshev``/``reference`` paths never form the [M, N, D] bands:
        they accumulate only these rows and back-propagate row-sparse gradients (the training step). ``rows`` should
        be distinct (e.g. ``torch.unique`` of a batch's nodes). Energy shares come from the pass's own moments when
        edge tracking measured them (:meth:`forward` docs), else they are left as None for this call."""
        self._check(x)
        if self.num_bands == 1 or not self.bands.supports_rows:
            return self.forward(x)[:, rows].transpose(0, 1)
        bands = self.bands.decompose(x, self.state, None, rows=rows)
        self.state.calls += 1
        return bands

    # -- diagnostics -------------------------------------------------------------------------------------------
    def band_responses(self, lam):
        """Filter responses h_m(λ) [M, len(λ)] at eigenvalues ``lam`` of L (numpy float64).

        ``chebyshev``/``reference``: the polynomial responses (they sum to 1); ``eigen``: indicators of the last
        estimated λ-edges (a degenerate eigenvalue split between two bands is shown in the upper one).
        """
        lam = np.asarray(lam, dtype=np.float64)
        if self.num_bands == 1:
            return np.ones((1, lam.size))
        return self.bands.responses(lam, self.state)

    def energy_cdf(self, lam):
        """Estimated fraction of the signal energy at eigenvalues <= λ (chebyshev: KPM CDF from ``moments``)."""
        return ChebyshevBands.energy_cdf(lam, self.state)

    def extra_repr(self):
        return (f"num_nodes={self.num_nodes}, num_bands={self.num_bands}, method='{self.method}', "
                f"cheb_order={self.cheb_order}, k_poly={self.k_poly}, refresh_every={self.refresh_every}, "
                f"track_edges={self.track_edges}")
