"""Base classes of the plugin's models.

* :class:`MultimodalRecommender` - every model: modality features, the training graph Â, kNN item graphs S_m and
  their mixture Σ_m α_m S_m, modality weights, one evaluation cache, inner-product scoring.
* :class:`GraphRecommender` - the graph baselines (MMGCN, GRCN, LATTICE, SLMRec, FREEDOM, BM3, MGCN, LGMRec,
  SMORE): adds the ID embeddings E_u, E_i and LightGCN over them.
* :class:`MultiViewRecommender` - MGCN and SMORE: the user-item view plus purified item-item views over frozen
  cosine-weighted kNN graphs, and their shared loss.
* :class:`UserGraphRecommender` - DualGNN and DRAGON: per-modality preference GCNs over Â, per-user modality
  weights, the user co-occurrence graph resampled every epoch, and their shared loss.
* :func:`check_negative_free` - the guard of the models trained without sampled negatives (BM3, SLMRec).
"""

import math
from collections import OrderedDict

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import nn

from recbole_ssr.core.cache import GraphCache
from recbole_ssr.core.errors import ConfigError
from recbole_ssr.model.graph import (bipartite_adjacency, bipartite_edges, cooccurrence_neighbours, knn_adjacency,
                                     knn_neighbours, neighbour_graph, propagate, sample_user_neighbours, sparse_to_csr,
                                     user_item_block)
from recbole_ssr.model.layers import FeatureTables, per_modality
from recbole_ssr.model.losses import batch_mean_square, bpr_loss, info_nce, l2_penalty


def check_negative_free(config, model_name):
    """A model trained on observed (user, item) pairs only (``input_type`` POINTWISE, its yaml sets
    ``train_neg_sample_args: ~``) refuses a configuration that turns negative sampling back on: with POINTWISE input
    the sampled negatives would arrive as extra rows that its loss would treat as positives."""
    sampling = config["train_neg_sample_args"] or {}
    if sampling.get("distribution", "none") != "none":
        raise ConfigError(
            f"{model_name} trains without negative items, but train_neg_sample_args is {sampling}. "
            f"Set train_neg_sample_args: ~ (properties/model/{model_name}.yaml does) and do not override it.")


class MultimodalRecommender(GeneralRecommender):
    """The base class of a multimodal model: every model of the package, and yours (``--model=file.py:Class``,
    ``from recbole_ssr import MultimodalRecommender``; examples/mean_fusion.py). A RecBole ``GeneralRecommender``
    over a :class:`~recbole_ssr.data.dataset.MultimodalDataset`, whatever modalities the dataset has.

    What it gives:

    * **features**: ``self.modality_names`` and ``self.modality_features`` (name -> float tensor
      ``[n_items, d_m]`` on the model's device, row j = RecBole item j), ``self.modality_feature(name)``; a model
      needing at least k modalities sets ``min_modalities = k`` and gets one clear error on a dataset with fewer.
    * **weights**: :meth:`modality_weights` - per-modality weights from the configuration, normalised.
    * **graphs** (the shared toolkit of :mod:`recbole_ssr.model.graph`): ``self.interaction_matrix`` (training
      interactions, scipy CSR ``[n_users, n_items]``), :meth:`norm_adj_matrix` (Â), :meth:`knn_item_graph` and
      :meth:`mixed_item_graph` (kNN item graphs, disk-cached), and :func:`~recbole_ssr.model.graph.propagate` for
      any number of propagation layers; :class:`GraphRecommender` adds ID embeddings and LightGCN.
    * **scoring**: subclasses implement ``forward()`` -> ``(user_embeddings [n_users, d], item_embeddings
      [n_items, d])`` and ``calculate_loss(interaction)``; ``predict``/``full_sort_predict`` are the inner product of
      those embeddings, computed once per evaluation and cached (the cache is dropped whenever the model switches
      train/eval mode or loads weights, so it never outlives one evaluation pass). The trainer calls
      ``pre_epoch_processing(epoch)`` before each epoch when the model defines it.

    ``config_ranges``: the valid values of the model's own numeric configuration keys, ``{key: (kind, lowest,
    highest[, bounds])}``: ``kind`` "int" (whole numbers) or "float" (numbers), "int?"/"float?" when ``~`` is
    allowed too, "int{}" when a ``{modality: value}`` mapping is too (each entry checked); ``lowest``/``highest`` None = unbounded; ``bounds`` "[]" (default, both ends allowed), "(]", "[)"
    or "()". A value set on the command line, in a yaml or in a search space is checked against them before any data
    is loaded (:mod:`recbole_ssr.config.validation`); entries of a subclass add to (and override) its bases'. RecBole-wide
    keys (``epochs``, ``learning_rate``, ``embedding_size``, ...) are checked centrally and need no entry.
    """

    input_type = InputType.PAIRWISE
    #: smallest number of content modalities the model needs
    min_modalities = 0
    config_ranges = {"knn_k": ("int", 1, None), "n_mm_layers": ("int", 0, None), "reg_weight": ("float", 0.0, None)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.config = config
        features = getattr(dataset, "modality_features", OrderedDict())
        if len(features) < self.min_modalities:
            raise ConfigError(
                f"{self.__class__.__name__} needs at least {self.min_modalities} content modality, but dataset "
                f"'{config['dataset']}' has {list(features) or 'none'}. Declare feature files in the dataset yaml "
                "('modalities') or add <name>_feat.npy files to the dataset folder."
            )
        self.modality_names = list(features)
        for name, matrix in features.items():
            self.register_buffer(f"feat_{name}", matrix.clone(), persistent=False)
        self.interaction_matrix = dataset.interaction_csr()
        self.graph_cache = GraphCache(config, dataset)
        self._eval_cache = None

    # -- content -----------------------------------------------------------------------------------------------
    def modality_feature(self, name):
        return getattr(self, f"feat_{name}")

    @property
    def modality_features(self):
        return OrderedDict((name, self.modality_feature(name)) for name in self.modality_names)

    def modality_weights(self, weights=None, key="modality_weights", reference_key="reference_modality_weights"):
        """Per-modality mixing weights, normalised to sum to 1: config ``key`` (a ``{name: w}`` mapping or a list
        in modality order) when set; else config ``reference_key`` (the authors' weights, e.g.
        ``{image: 0.1, text: 0.9}``) when the dataset has exactly those modalities; else uniform."""
        weights = self.config[key] if weights is None else weights
        reference = self.config[reference_key]
        if weights is None and reference and set(reference) == set(self.modality_names):
            weights = reference
        if weights is None:
            values = [1.0] * len(self.modality_names)
        elif isinstance(weights, dict):
            missing = [m for m in self.modality_names if m not in weights]
            if missing:
                raise ConfigError(f"{key} gives no weight for modalities {missing} (has {list(weights)}).")
            values = [float(weights[m]) for m in self.modality_names]
        else:
            if len(weights) != len(self.modality_names):
                raise ConfigError(
                    f"{key} has {len(weights)} values but the dataset has {len(self.modality_names)} modalities "
                    f"{self.modality_names}; give one weight per modality or a {{name: weight}} mapping."
                )
            values = [float(w) for w in weights]
        total = sum(values)
        return [v / total for v in values]

    # -- graphs ------------------------------------------------------------------------------------------------
    def norm_adj_matrix(self):
        """Â = D^-1/2 A D^-1/2 over the training interactions, users first then items (torch sparse COO on the
        model device; :func:`~recbole_ssr.model.graph.bipartite_adjacency`)."""
        users, items = bipartite_edges(self.interaction_matrix)
        return bipartite_adjacency(users, items, self.n_users, self.n_items).to(self.device)

    def knn_item_graph(self, name, k, normalization="sym", weighted=False):
        """Frozen top-k cosine kNN item graph S_m of modality ``name``: binary edges, or cosine-weighted ones
        (``weighted``, LATTICE's original graph), normalised as :func:`~recbole_ssr.model.graph.knn_adjacency`.
        RecBole's padding item 0 (zero features) is no one's neighbour. The neighbours are cached on disk by dataset
        + modality + k (one entry serves both edge kinds)."""
        features = self.modality_feature(name).detach().cpu()
        indices, similarities = self.graph_cache.get_or_build(
            "knn", {"modality": name, "k": int(k), "dim": features.shape[1], "skip": [0]},
            lambda: knn_neighbours(features, k, skip=[0]))
        values = similarities if weighted else None
        return knn_adjacency(indices, features.shape[0], values=values, normalization=normalization).to(self.device)

    def mixed_item_graph(self, k, weights):
        """S = Σ_m α_m S_m over the modalities, S_m the binary sym-normalised kNN graphs (FREEDOM Sec. 3.1; SSR's
        S_mm, docs/ssr.md "Backbone"); ``weights`` α in modality order (see :meth:`modality_weights`).
        Coalesced sparse COO on the model device."""
        graph = None
        for name, alpha in zip(self.modality_names, weights):
            part = self.knn_item_graph(name, k) * alpha
            graph = part if graph is None else graph + part
        return graph.coalesce()

    # -- evaluation cache ----------------------------------------------------------------------------------------
    def train(self, mode=True):
        self._eval_cache = None
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._eval_cache = None
        return super().load_state_dict(*args, **kwargs)

    def cached_embeddings(self):
        """``forward()`` in training; in evaluation computed once and reused for every user batch."""
        if self.training:
            return self.forward()
        if self._eval_cache is None:
            self._eval_cache = self.forward()
        return self._eval_cache

    def predict(self, interaction):
        user_e, item_e = self.cached_embeddings()
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        return (user_e[users] * item_e[items]).sum(dim=-1)

    def full_sort_predict(self, interaction):
        user_e, item_e = self.cached_embeddings()
        return (user_e[interaction[self.USER_ID]] @ item_e.T).view(-1)


class GraphRecommender(MultimodalRecommender):
    """A graph model over ID embeddings: ``user_embedding`` E_u [U, d] and ``item_id_embedding`` E_i [I, d]
    (``embedding_size`` d, Xavier-uniform), propagated by LightGCN (:meth:`lightgcn`)."""

    min_modalities = 1
    config_ranges = {"n_ui_layers": ("int", 0, None)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)

    def add_feature_projections(self, config, out_dim, init=None):
        """``self.features``: the raw modality tables (:class:`~recbole_ssr.model.layers.FeatureTables`, trainable
        with ``finetune_features``, as in the authors' code); ``self.projections``: f_m(x) = W_m x + b_m to
        ``out_dim`` per modality, each weight re-initialised by ``init`` (e.g. ``nn.init.xavier_normal_``) if
        given."""
        self.features = FeatureTables(self.modality_features, config["finetune_features"])
        self.projections = nn.ModuleDict()
        for name, table in self.features.items():
            self.projections[name] = nn.Linear(table.shape[1], out_dim)
            if init is not None:
                init(self.projections[name].weight)

    def bpr_and_id_penalty(self, interaction):
        """(BPR of the batch on ``forward()``'s embeddings, :func:`~recbole_ssr.model.losses.batch_mean_square` of
        the batch's raw ID embeddings): the loss terms MMGCN and GRCN share."""
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_e, item_e = self.forward()
        u = user_e[users]
        ids = self.item_id_embedding.weight
        return (bpr_loss((u * item_e[pos]).sum(-1), (u * item_e[neg]).sum(-1)),
                batch_mean_square(self.user_embedding.weight[users], ids[pos], ids[neg]))

    def lightgcn(self, adjacency, n_layers):
        """LightGCN (He et al., SIGIR'20, eqs. 7-8) of [E_u; E_i] over ``adjacency``, mean of the layers 0..L,
        split into (users [U, d], items [I, d])."""
        embeddings = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight], dim=0)
        mean = propagate(adjacency, embeddings, n_layers, combine="mean")
        return mean[:self.n_users], mean[self.n_users:]


class MultiViewRecommender(GraphRecommender):
    """MGCN's design, shared with SMORE: a user-item view E_ui (LightGCN over Â, ``n_ui_layers``), item-item views
    over the frozen cosine-weighted kNN graphs S_m (top-``knn_k``, a number or ``{modality: k, default: k}``;
    ``n_layers`` products) lifted to users by R̂ (the user-item block of Â), projected modality features
    W_m x_m + b_m (raw tables fine-tuned with ``finetune_features``), and the loss
    BPR + ``cl_loss`` · [InfoNCE(side, E_ui) over the batch's positive items + the same over its users]
    (temperature ``cl_temperature``) + ``reg_weight`` · ½Σ‖e‖²/B on the final batch embeddings.
    Subclasses implement ``views()`` -> (final, side, content) embeddings of all nodes, users first.
    """

    config_ranges = {"knn_k": ("int{}", 1, None), "cl_loss": ("float", 0.0, None),
                     "cl_temperature": ("float", 0.0, None, "()")}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.n_ui_layers, self.n_layers = config["n_ui_layers"], config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.cl_weight, self.temperature = config["cl_loss"], config["cl_temperature"]

        norm_adj = self.norm_adj_matrix()
        self.register_buffer("norm_adj", norm_adj, persistent=False)
        self.register_buffer("user_item", user_item_block(norm_adj, self.n_users, self.n_items), persistent=False)
        knn_k = per_modality(config["knn_k"], self.modality_names, "knn_k")
        for name in self.modality_names:
            self.register_buffer(f"item_graph_{name}", self.knn_item_graph(name, knn_k[name], weighted=True),
                                 persistent=False)
        self.features = FeatureTables(self.modality_features, trainable=bool(config["finetune_features"]))
        self.projection = nn.ModuleDict({
            name: nn.Linear(self.modality_feature(name).shape[1], self.embedding_size)
            for name in self.modality_names})

    def content(self):
        """E_ui = LightGCN over Â of the ID embeddings, all nodes, users first."""
        return torch.cat(self.lightgcn(self.norm_adj, self.n_ui_layers), dim=0)

    def item_item_view(self, name, items):
        """[R̂ Ē_i ; Ē_i] with Ē_i = S^L ``items`` over the item graph ``name``."""
        items = propagate(getattr(self, f"item_graph_{name}"), items, self.n_layers)
        return torch.cat([torch.sparse.mm(self.user_item, items), items], dim=0)

    def views(self):
        raise NotImplementedError

    def forward(self):
        final, _, _ = self.views()
        return torch.split(final, [self.n_users, self.n_items], dim=0)

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        final, side, content = self.views()
        user_e, item_e = torch.split(final, [self.n_users, self.n_items], dim=0)
        side_u, side_i = torch.split(side, [self.n_users, self.n_items], dim=0)
        content_u, content_i = torch.split(content, [self.n_users, self.n_items], dim=0)
        u, i, j = user_e[users], item_e[pos], item_e[neg]
        loss = bpr_loss((u * i).sum(-1), (u * j).sum(-1))
        cl = (info_nce(side_i[pos], content_i[pos], self.temperature)
              + info_nce(side_u[users], content_u[users], self.temperature))
        return loss + self.reg_weight * 0.5 * l2_penalty(u, i, j) + self.cl_weight * cl


class UserGraphRecommender(MultimodalRecommender):
    """DualGNN's design, shared with DRAGON (Wang et al., TMM'21; Zhou et al., ECAI'23; behaviour of the authors'
    code as in MMRec):

    * **modality GCN**, per modality m: item vectors x_m,i = W_2 LeakyReLU(W_1 f_m,i + b_1) + b_2 (``mlp_hidden_size``
      then ``embedding_size``; the raw features stay frozen), user vectors = a learnable preference table P_m
      (Xavier-normal); both L2-normalised row-wise, then ``n_layers`` weight-free hops over Â summed with the input,
      E_m = Σ_{l=0..L} Â^l X (L = 2: X + ÂX + Â²X; :func:`~recbole_ssr.model.graph.propagate`, ``combine='sum'``).
    * **per-user modality weights** w_u ∈ R^M, Xavier-normal then softmax over the modalities at initialisation,
      trained freely afterwards (absent with one modality, as in the authors' code).
    * **user co-occurrence graph**: each user's top-``user_knn_k`` co-users by shared training items
      (:func:`~recbole_ssr.model.graph.cooccurrence_neighbours`, computed sparsely once), padded by sampling and
      softmax-weighted (:func:`~recbole_ssr.model.graph.sample_user_neighbours`) afresh before every training
      epoch (``pre_epoch_processing``, the trainer's per-epoch hook); the user vector adds its neighbours' weighted
      sum, e_u <- e_u + Σ_v W_uv e_v. Evaluation uses the current lists, which are saved in the checkpoint (a
      buffer): the best checkpoint is tested with the graph of its epoch, as the authors' per-epoch test does.
    * **loss**: -mean log₂ σ(s⁺ - s⁻) (the authors' BPR uses log₂) + ``reg_weight`` · (Σ_m mean(P_m[batch users]²)
      + mean(w²)).

    Subclasses implement ``fuse(views)`` -> (users, items), ``views`` = ``{modality: (users [U, d], items [I, d])}``.
    """

    min_modalities = 1
    config_ranges = {"user_knn_k": ("int", 1, None)}

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim, hidden = config["embedding_size"], config["mlp_hidden_size"]
        self.n_layers, self.reg_weight = int(config["n_layers"]), float(config["reg_weight"])
        self.register_buffer("norm_adj", sparse_to_csr(self.norm_adj_matrix()), persistent=False)
        self.encoders = nn.ModuleDict({
            name: nn.Sequential(nn.Linear(self.modality_feature(name).shape[1], hidden), nn.LeakyReLU(),
                                nn.Linear(hidden, dim))
            for name in self.modality_names})
        self.preference = nn.ParameterDict({
            name: nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users, dim))) for name in self.modality_names})
        self.user_weights = None
        if len(self.modality_names) > 1:
            initial = nn.init.xavier_normal_(torch.empty(self.n_users, len(self.modality_names)))
            self.user_weights = nn.Parameter(torch.softmax(initial, dim=1))
        indices, counts = cooccurrence_neighbours(self.interaction_matrix, config["user_knn_k"])
        self.register_buffer("neighbour_indices", indices.to(self.device), persistent=False)
        self.register_buffer("neighbour_counts", counts.to(self.device), persistent=False)
        # the current epoch's neighbour lists: saved with the weights, so that the best checkpoint is evaluated with
        # the user graph it was trained with
        slots, weights = sample_user_neighbours(indices, counts)
        self.register_buffer("user_neighbour_slots", slots.to(self.device))
        self.register_buffer("user_neighbour_weights", weights.to(self.device))
        self._user_graph = None

    def pre_epoch_processing(self, epoch=None):
        """Resample the user co-occurrence graph for the coming epoch."""
        slots, weights = sample_user_neighbours(self.neighbour_indices, self.neighbour_counts)
        self.user_neighbour_slots.copy_(slots)
        self.user_neighbour_weights.copy_(weights)
        self._user_graph = None

    @property
    def user_graph(self):
        """W [U, U] (CSR) of the current neighbour lists."""
        if self._user_graph is None:
            self._user_graph = sparse_to_csr(neighbour_graph(self.user_neighbour_slots, self.user_neighbour_weights))
        return self._user_graph

    def load_state_dict(self, *args, **kwargs):
        self._user_graph = None
        return super().load_state_dict(*args, **kwargs)

    def modality_views(self):
        """``{modality: (users, items)}``: the modality GCN of every modality."""
        views = OrderedDict()
        for name in self.modality_names:
            nodes = torch.cat([self.preference[name], self.encoders[name](self.modality_feature(name))], dim=0)
            nodes = propagate(self.norm_adj, nn.functional.normalize(nodes, dim=1), self.n_layers, combine="sum")
            views[name] = torch.split(nodes, [self.n_users, self.n_items], dim=0)
        return views

    def weighted_user_views(self, views):
        """[w_u,m · e_u,m for every modality m] (the plain user views with one modality)."""
        users = [view[0] for view in views.values()]
        if self.user_weights is None:
            return users
        return [self.user_weights[:, m:m + 1] * user for m, user in enumerate(users)]

    def fuse(self, views):
        raise NotImplementedError

    def forward(self):
        users, items = self.fuse(self.modality_views())
        return users + propagate(self.user_graph, users, 1), items

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_e, item_e = self.forward()
        u = user_e[users]
        loss = bpr_loss((u * item_e[pos]).sum(-1), (u * item_e[neg]).sum(-1)) / math.log(2.0)
        reg = sum(self.preference[name][users].pow(2).mean() for name in self.modality_names)
        if self.user_weights is not None:
            reg = reg + self.user_weights.pow(2).mean()
        return loss + self.reg_weight * reg
