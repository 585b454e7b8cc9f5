"""Base class of the plugin's multimodal models: features, training graph, kNN item graphs, evaluation cache."""

from collections import OrderedDict

import torch

from recbole_ssr import compat

compat.apply()  # RecBole 1.2.1 present (else ImportError with the fix), and its fixes

from recbole.model.abstract_recommender import GeneralRecommender  # noqa: E402
from recbole.utils import InputType  # noqa: E402

from recbole_ssr.errors import ConfigError  # noqa: E402
from recbole_ssr.model.graph import (GraphCache, bipartite_edges, knn_adjacency, knn_neighbours,  # noqa: E402
                                     normalized_adjacency)


class MultimodalRecommender(GeneralRecommender):
    """A RecBole ``GeneralRecommender`` over a :class:`~recbole_ssr.data.dataset.MultimodalDataset`.

    Subclasses implement ``forward()`` -> ``(user_embeddings [n_users, d], item_embeddings [n_items, d])`` and
    ``calculate_loss``; scoring (``predict``/``full_sort_predict``) is the inner product of those embeddings,
    computed once per evaluation and cached (the cache is dropped whenever the model switches train/eval mode or
    loads weights, so it never outlives one evaluation pass).
    """

    input_type = InputType.PAIRWISE
    #: smallest number of content modalities the model needs
    min_modalities = 0

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
        """Â over the training interactions, users first then items (torch sparse COO on the model device)."""
        users, items = bipartite_edges(self.interaction_matrix)
        return normalized_adjacency(users, items, self.n_users, self.n_items).to(self.device)

    def knn_item_graph(self, name, k, normalization="sym"):
        """Frozen top-k cosine kNN item graph of modality ``name`` (cached on disk by dataset + k)."""
        features = self.modality_feature(name).cpu()
        indices, _ = self.graph_cache.get_or_build(
            "knn", {"modality": name, "k": int(k), "dim": features.shape[1]},
            lambda: knn_neighbours(features, k))
        return knn_adjacency(indices, features.shape[0], normalization=normalization).to(self.device)

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
