"""The one dataset class every multimodal model uses, RecBole's ``Dataset`` plus aligned content features, and
:func:`create_dataset`, which prepares a dataset's source and loads it."""

import glob
import os
from logging import getLogger

import numpy as np
import scipy.sparse as sp
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data.dataset import Dataset
from recbole.utils import ModelType

from recbole_ssr.core.errors import DataError
from recbole_ssr.data.features import load_modalities
from recbole_ssr.data.source import non_utf8_error, prepare_source


def _non_utf8_interaction_file(config):
    for path in sorted(glob.glob(os.path.join(config["data_path"], f"{config['dataset']}.*"))):
        error = non_utf8_error(path) if os.path.isfile(path) else None
        if error is not None:
            return error
    return DataError(f"a file of dataset '{config['dataset']}' in {config['data_path']} is not UTF-8 text; convert it.")


class MultimodalDataset(Dataset):
    """RecBole ``Dataset`` with content features per modality.

    Attributes:
        modality_features: ``OrderedDict`` modality name -> float32 tensor ``[item_num, dim]``; row j is RecBole
            item j (row 0, the padding item, is zero). Any number of modalities (0, 1, 2, ...), any names/widths.
        feature_report: per modality: source file, width, rows, items filled with the mean row, items whose
            row is all zero.

    ``build()`` returns shallow copies, so the train/valid/test datasets share the same feature tensors.
    """

    def __init__(self, config):
        try:
            super().__init__(config)
        except UnicodeDecodeError:  # RecBole reads the atomic files as UTF-8: name the file and line at fault
            raise _non_utf8_interaction_file(config) from None
        item_tokens = self.field2id_token[self.iid_field]
        self.modality_features, self.feature_report = load_modalities(config, item_tokens, config["dataset_dir"])
        for name, info in self.feature_report.items():
            getLogger().info(
                f"modality '{name}': {info['dim']}-d from {info['file']} "
                f"({info['items_without_row']} items filled with the mean row, "
                f"{info['items_with_zero_row']} with an all-zero row)"
            )

    @property
    def modalities(self):
        return list(self.modality_features)

    def interaction_csr(self):
        """Binary ``[user_num, item_num]`` CSR matrix of this dataset's interactions (float32, duplicates merged)."""
        users = self.inter_feat[self.uid_field].numpy()
        items = self.inter_feat[self.iid_field].numpy()
        matrix = sp.csr_matrix(
            (np.ones(len(users), dtype=np.float32), (users, items)), shape=(self.user_num, self.item_num)
        )
        matrix.data[:] = 1.0
        return matrix


def create_dataset(config):
    """Prepare the dataset's source once (:func:`recbole_ssr.data.source.prepare_source`: locate, convert MMRec
    folders, cold-split) and load it.

    General models get :class:`MultimodalDataset` (RecBole's ``Dataset`` + aligned
    features); other RecBole model types get RecBole's own dataset class on the same converted files.
    """
    prepare_source(config)
    if config["MODEL_TYPE"] == ModelType.GENERAL:
        return MultimodalDataset(config)
    return recbole_create_dataset(config)
