"""What a band decomposer remembers between calls: its band edges and how fresh they are."""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch


@dataclass
class BandState:
    """The band-edge state of one :class:`~recbole_ssr.model.spectral.SpectralBandDecomposer`.

    A decomposer owns one; a one-off decomposition that must not disturb training (e.g.
    :meth:`recbole_ssr.model.ssr.SSR.band_signal`) passes a fresh one from ``decomposer.new_state()`` instead.

    Edge schedule: ``calls`` counts decompositions; ``stale`` asks for an exact estimate at the next call
    (:meth:`due`); ``free_moments`` are the Chebyshev moments the previous filtering pass measured for free
    (``chebyshev`` with edge tracking), from which the next call re-solves its edges.
    Band edges: ``coefficients`` [M-1, K+1] of the polynomial bank in L - I (``chebyshev``/``reference``),
    ``borders`` mode indices of the eigen bands (``eigen``), ``band_edges`` λ_1..λ_{M-1} (None for ``reference``),
    ``moments`` μ_0..μ_K of the signal the ``chebyshev`` edges came from.
    Diagnostics of the last call: ``energy_shares`` (projection shares, detached, CPU float64) and ``timings``
    (seconds of its phases).
    """

    calls: int = 0
    stale: bool = True
    free_moments: Optional[np.ndarray] = None
    coefficients: Optional[np.ndarray] = None
    borders: Optional[list] = None
    band_edges: Optional[torch.Tensor] = None
    moments: Optional[np.ndarray] = None
    energy_shares: Optional[torch.Tensor] = None
    timings: dict = field(default_factory=dict)

    def due(self, refresh_every, calls=None):
        """Whether the call numbered ``calls`` (default: the next one) estimates its edges exactly: when marked
        stale, on the first call, and every ``refresh_every`` calls (0 = never again)."""
        calls = self.calls if calls is None else calls
        return self.stale or calls == 0 or (refresh_every > 0 and calls % refresh_every == 0)
