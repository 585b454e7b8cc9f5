"""The interface every band method implements."""

import torch

from recbole_ssr.model.spectral.state import BandState


class BandMethod:
    """Splits a graph signal X [N, D] into M bands that sum to X, given Â (a CSR tensor, N x N) of the graph.

    ``decompose(x, state, edge_signal=None)`` returns the bands [M, N, D] and updates ``state``
    (:class:`~recbole_ssr.model.spectral.state.BandState`: the band edges, the energy shares and timings of this
    call); ``responses(lam, state)`` gives the filter responses h_m(λ) [M, len(λ)]. Methods that can filter only
    some rows (``supports_rows``) take ``rows=`` in ``decompose`` and return [R, M, D].
    """

    name = None
    supports_rows = False

    def __init__(self, adj, num_bands):
        self.adj = adj
        self.num_nodes = int(adj.shape[0])
        self.num_bands = int(num_bands)
        self._adj_cache = {}

    def new_state(self):
        return BandState()

    def adjacency(self, device, dtype):
        """Â as CSR on ``device``/``dtype`` (cached)."""
        key = (torch.device(device), dtype)
        if key not in self._adj_cache:
            self._adj_cache[key] = self.adj.to(device=device, dtype=dtype)
        return self._adj_cache[key]

    def decompose(self, x, state, edge_signal=None):
        raise NotImplementedError

    def responses(self, lam, state):
        raise NotImplementedError
