"""The plugin's models: one file per model, named after its class (``freedom.py`` <-> ``FREEDOM``), found by
:func:`recbole_ssr.model.registry.get_model`.

Shared pieces, each written once:

* ``abstract.py`` - base classes: :class:`~.abstract.MultimodalRecommender` (features, Â, kNN item graphs S_m and
  Σ_m α_m S_m, modality weights, evaluation cache, scoring), :class:`~.abstract.GraphRecommender` (+ ID embeddings,
  LightGCN, feature projections), :class:`~.abstract.MultiViewRecommender` (+ MGCN/SMORE's views and loss),
  :class:`~.abstract.UserGraphRecommender` (DualGNN/DRAGON's modality GCNs and user co-occurrence graph).
* ``graph.py`` - the graph toolkit: adjacency construction and normalisation, chunked kNN and user co-occurrence
  graphs, edge sampling, edge softmax, the disk cache, and :func:`~.graph.propagate`, the one propagation operator.
* ``layers.py`` - neural blocks of the baselines; ``losses.py`` - BPR, L2, InfoNCE.
* ``spectral/`` - SSR stage (i), the band decomposition (one file per band method); ``ssr_layers.py`` - SSR
  stages (ii)-(iv). The method is described in docs/ssr.md.
"""
