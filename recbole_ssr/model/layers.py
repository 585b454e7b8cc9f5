"""Neural building blocks shared by the multimodal baselines (graphs live in :mod:`recbole_ssr.model.graph`).

* :class:`FeatureTables` - raw modality features as trainable parameters (the authors'
  ``nn.Embedding.from_pretrained(freeze=False)``) or frozen buffers.
* :func:`gate` - σ(W x + b), MGCN's and SMORE's purifier / preference gate.
* :func:`per_modality` - a scalar or ``{name: value, default: value}`` config entry resolved per modality.
"""

from torch import nn

from recbole_ssr.core.errors import ConfigError


class FeatureTables(nn.Module):
    """Raw modality feature tables ``[n_items, dim_m]``: trainable parameters when ``trainable`` (what the
    LATTICE/FREEDOM/BM3 authors do with ``nn.Embedding.from_pretrained(features, freeze=False)``), otherwise frozen
    non-persistent buffers. ``tables[name]`` returns the current table."""

    def __init__(self, features, trainable):
        super().__init__()
        self.names = list(features)
        self.trainable = bool(trainable)
        for name, matrix in features.items():
            if self.trainable:
                self.register_parameter(f"table_{name}", nn.Parameter(matrix.detach().clone()))
            else:
                self.register_buffer(f"table_{name}", matrix, persistent=False)

    def __getitem__(self, name):
        return getattr(self, f"table_{name}")

    def items(self):
        return [(name, self[name]) for name in self.names]


def gate(dim):
    """σ(W x + b) on ``dim``-dim vectors: the purifier / preference gate of MGCN and SMORE."""
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


def per_modality(value, names, key):
    """Resolve a per-modality config entry: a number (same for every modality) or a mapping
    ``{modality: value, ..., default: value}``; names absent from the mapping take ``default``.
    Mapping keys that are not modalities of this dataset are ignored (one yaml serves Amazon and TikTok)."""
    if isinstance(value, dict):
        resolved = {}
        for name in names:
            if name in value:
                resolved[name] = value[name]
            elif "default" in value:
                resolved[name] = value["default"]
            else:
                raise ConfigError(f"{key} gives no value for modality '{name}' and no 'default' (has {list(value)}); "
                                  f"add '{name}: <value>' or 'default: <value>' to {key}.")
        return resolved
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number or a {{modality: value, default: value}} mapping, got {value!r}; "
                          f"on the command line write e.g. --{key}=\"{{'image': 40, 'default': 10}}\".")
    return {name: value for name in names}
