"""Data loaders for the two evaluation protocols.

``eval_protocol: mmrec`` (the multimodal papers' numbers): fixed x_label split; when scoring the validation *and*
the test set only the user's **training** items are masked (RecBole masks train + valid at test time); users
without a valid (test) item are absent from the valid (test) loader, so they are excluded from those metrics.
``eval_protocol: recbole``: RecBole's own loaders, unchanged.
"""

import torch

from recbole_ssr import compat

compat.apply()  # RecBole 1.2.1 present (else ImportError with the fix), and its fixes

from recbole.data.dataloader import FullSortEvalDataLoader  # noqa: E402
from recbole.data.utils import create_samplers, get_dataloader  # noqa: E402


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


def data_preparation(config, dataset):
    """Split ``dataset`` and build the train / valid / test loaders for the configured protocol."""
    built = dataset.build()
    train_dataset, valid_dataset, test_dataset = built
    train_sampler, valid_sampler, test_sampler = create_samplers(config, dataset, built)
    train_data = get_dataloader(config, "train")(config, train_dataset, train_sampler, shuffle=config["shuffle"])
    if config["eval_protocol"] == "mmrec":
        valid_data = TrainMaskedFullSortEvalDataLoader(config, valid_dataset, valid_sampler, train_dataset)
        test_data = TrainMaskedFullSortEvalDataLoader(config, test_dataset, test_sampler, train_dataset)
    else:
        valid_data = get_dataloader(config, "valid")(config, valid_dataset, valid_sampler, shuffle=False)
        test_data = get_dataloader(config, "test")(config, test_dataset, test_sampler, shuffle=False)
    return train_data, valid_data, test_data
