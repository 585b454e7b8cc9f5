"""Reading the checkpoints this package writes.

A checkpoint is RecBole's: ``torch.save`` of ``{config, epoch, cur_step, best_valid_score, state_dict,
other_parameter, optimizer}``, plus ``data_fingerprint`` (:func:`training_data_fingerprint`), which lets a tool that
evaluates a checkpoint refuse data that differ from the data it was trained on. It pickles RecBole's ``Config``
subclass, so it is read with ``weights_only=False`` - here only, and only for files of this package.

Checkpoints written before the package had its layer folders name the old modules (``recbole_ssr.config.Config``);
:data:`MOVED_MODULES` maps them to the new ones, so every checkpoint ever written still loads.
"""

import hashlib
import pickle

import numpy as np
import torch

from recbole_ssr.core.errors import ConfigError

#: old module -> new module, for classes pickled inside checkpoints written before the layer folders
MOVED_MODULES = {
    "recbole_ssr.config": "recbole_ssr.config.configurator",
    "recbole_ssr.search_space": "recbole_ssr.config.search_space",
    "recbole_ssr.validation": "recbole_ssr.config.validation",
    "recbole_ssr.cache": "recbole_ssr.core.cache",
    "recbole_ssr.errors": "recbole_ssr.core.errors",
    "recbole_ssr.paths": "recbole_ssr.core.paths",
    "recbole_ssr.report": "recbole_ssr.core.report",
    "recbole_ssr.safe_io": "recbole_ssr.core.safe_io",
    "recbole_ssr.spec": "recbole_ssr.core.spec",
    "recbole_ssr.utils": "recbole_ssr.model.registry",
    "recbole_ssr.evaluation": "recbole_ssr.training.evaluation",
    "recbole_ssr.per_user": "recbole_ssr.training.per_user",
    "recbole_ssr.trainer": "recbole_ssr.training.trainer",
    "recbole_ssr.quick_start": "recbole_ssr.experiments.run",
    "recbole_ssr.runner": "recbole_ssr.experiments.runner",
}


class _MovedModulesUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return super().find_class(MOVED_MODULES.get(module, module), name)


class _MovedModulesPickle:
    """A ``pickle_module`` for ``torch.load`` that reads old module paths (:data:`MOVED_MODULES`)."""

    Unpickler = _MovedModulesUnpickler
    load = staticmethod(lambda file, **kw: _MovedModulesUnpickler(file, **kw).load())


def load_own_checkpoint(path, device):
    """``torch.load`` of a checkpoint this package wrote (it pickles RecBole's Config, so weights_only=False)."""
    return torch.load(path, map_location=device, weights_only=False, pickle_module=_MovedModulesPickle)


def read_checkpoint(path, device="cpu"):
    """The checkpoint at ``path``, or one error naming the file when it is not a checkpoint of this package."""
    try:
        checkpoint = load_own_checkpoint(path, device)
        checkpoint["config"]["model"]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (expected a checkpoint .pth written by a recbole-ssr run).") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same explanation
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(f"{path}: not a checkpoint written by a recbole-ssr run ({type(exc).__name__}: "
                          f"{first}).") from None
    return checkpoint


def training_data_fingerprint(dataset):
    """A short hash of a training dataset: its (user, item) pairs as RecBole ids, sorted, and the tokens those ids
    stand for. Equal for the same training data whatever the order; different after any change of it."""
    digest = hashlib.sha256()
    users = np.asarray(dataset.inter_feat[dataset.uid_field].numpy(), dtype=np.int64)
    items = np.asarray(dataset.inter_feat[dataset.iid_field].numpy(), dtype=np.int64)
    order = np.lexsort((items, users))
    digest.update(users[order].tobytes())
    digest.update(items[order].tobytes())
    for field in (dataset.uid_field, dataset.iid_field):
        digest.update("\n".join(str(t) for t in dataset.field2id_token[field]).encode("utf-8"))
    return digest.hexdigest()[:16]
