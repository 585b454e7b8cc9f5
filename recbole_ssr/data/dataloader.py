"""Data loaders for the two evaluation protocols.

``eval_protocol: mmrec`` (the multimodal papers' numbers): fixed x_label split; when scoring the validation *and*
the test set only the user's **training** items are masked (RecBole masks train + valid at test time); users
without a valid (test) item are absent from the valid (test) loader, so they are excluded from those metrics.
``eval_protocol: recbole``: RecBole's own loaders, unchanged.

Two protocol-level switches (``properties/protocol/mmrec.yaml``; any protocol honours them when set, only the mmrec
protocol sets them), for every model:

* ``train_neg_items: all | train`` - training negatives drawn uniformly from every item id (RecBole) or only from
  the items that occur in the training interactions (MMRec's sampler, what the multimodal papers trained with).
* ``eval_users_without_train: keep | drop`` - users with no training interaction are evaluated (RecBole) or
  removed from the valid and test sets (MMRec's dataset split); the count is logged.
"""

from logging import getLogger

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.data.utils import create_samplers, get_dataloader
from recbole.sampler import Sampler

from recbole_ssr.core.errors import ConfigError

TRAIN_NEG_ITEMS = ("all", "train")
EVAL_USERS_WITHOUT_TRAIN = ("keep", "drop")


class TrainMaskedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """Full-sort evaluation that masks exactly the user's training items (MMRec protocol)."""

    def __init__(self, config, dataset, sampler, train_dataset, shuffle=False):
        matrix = train_dataset.interaction_csr() if hasattr(train_dataset, "interaction_csr") else \
            train_dataset.inter_matrix(form="csr")
        self._train_indptr, self._train_items = matrix.indptr, matrix.indices
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def _set_user_property(self, uid, used_item, positive_item):
        super()._set_user_property(uid, used_item, positive_item)
        if uid is not None:
            start, end = self._train_indptr[uid], self._train_indptr[uid + 1]
            self.uid2history_item[uid] = torch.as_tensor(self._train_items[start:end], dtype=torch.int64)


class TrainingItemSampler(Sampler):
    """RecBole's uniform ``Sampler`` drawing only from ``candidates`` (the item ids that occur in training); the
    rejection of each user's own items is RecBole's, unchanged."""

    @classmethod
    def restricted(cls, sampler, candidates):
        """A copy of ``sampler`` (a phase-set uniform :class:`Sampler`) that draws from ``candidates`` only."""
        restricted = cls.__new__(cls)
        restricted.__dict__.update(sampler.__dict__)
        restricted.candidates = np.asarray(candidates, dtype=np.int64)
        if len(restricted.candidates) == 0:
            raise ConfigError("train_neg_items: train, but the training set has no items to draw negatives from.")
        full = [int(u) for u, used in enumerate(restricted.used_ids) if len(used) >= len(restricted.candidates)]
        if full:
            raise ConfigError(
                f"train_neg_items: train cannot draw a negative for {len(full)} user(s) (e.g. user id {full[0]}): "
                f"they interacted with every one of the {len(restricted.candidates)} training items. Use "
                "train_neg_items: all, or filter those users (user_inter_num_interval).")
        return restricted

    def _uni_sampling(self, sample_num):
        return self.candidates[np.random.randint(0, len(self.candidates), sample_num)]


def training_negative_sampler(config, sampler, train_dataset):
    """The train sampler for ``train_neg_items`` (None/``all``: ``sampler`` unchanged)."""
    choice = config["train_neg_items"] or "all"
    if choice not in TRAIN_NEG_ITEMS:
        raise ConfigError(f"train_neg_items '{choice}' is unknown: use one of {', '.join(TRAIN_NEG_ITEMS)}.")
    if choice == "all" or sampler is None:
        return sampler
    if type(sampler) is not Sampler or sampler.distribution != "uniform":
        raise ConfigError(
            f"train_neg_items: train needs RecBole's uniform negative sampler, but this run uses "
            f"{type(sampler).__name__} with distribution '{sampler.distribution}' (train_neg_sample_args, "
            "repeatable). Use train_neg_items: all with it.")
    items = np.unique(train_dataset.inter_feat[train_dataset.iid_field].numpy())
    return TrainingItemSampler.restricted(sampler, items)


def without_users_lacking_training(config, train_dataset, datasets):
    """``datasets`` (valid, test) without the interactions of users who have none in ``train_dataset`` when
    ``eval_users_without_train: drop``; the number of users and interactions removed is logged."""
    choice = config["eval_users_without_train"] or "keep"
    if choice not in EVAL_USERS_WITHOUT_TRAIN:
        raise ConfigError(f"eval_users_without_train '{choice}' is unknown: use one of "
                          f"{', '.join(EVAL_USERS_WITHOUT_TRAIN)}.")
    if choice == "keep":
        return datasets
    trained = torch.zeros(train_dataset.user_num, dtype=torch.bool)
    trained[train_dataset.inter_feat[train_dataset.uid_field]] = True
    kept = []
    for phase, dataset in zip(("valid", "test"), datasets):
        users = dataset.inter_feat[dataset.uid_field]
        keep = trained[users]
        getLogger().info(
            f"eval_users_without_train: drop - {len(torch.unique(users[~keep]))} {phase} user(s) without a training "
            f"interaction removed ({int((~keep).sum())} of {len(users)} {phase} interactions)")
        kept.append(dataset.copy(dataset.inter_feat[torch.nonzero(keep).flatten()]) if not keep.all() else dataset)
    return kept


def data_preparation(config, dataset):
    """Split ``dataset`` and build the train / valid / test loaders for the configured protocol."""
    built = dataset.build()
    train_dataset = built[0]
    valid_dataset, test_dataset = without_users_lacking_training(config, train_dataset, built[1:])
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    train_sampler = training_negative_sampler(config, train_sampler, train_dataset)
    train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    if config["eval_protocol"] == "mmrec":
        valid_data = TrainMaskedFullSortEvalDataLoader(config, valid_dataset, valid_sampler, train_dataset)
        test_data = TrainMaskedFullSortEvalDataLoader(config, test_dataset, test_sampler, train_dataset)
    else:
        valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
        test_data = get_dataloader(config, "test")(config, test_dataset, test_sampler, shuffle=False)
    return train_data, valid_data, test_data
