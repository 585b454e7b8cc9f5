"""Multimodal dataset loading: both layouts, alignment, split, protocols' masking, bad input."""

import numpy as np
import pytest
import torch

from conftest import QUICK
from recbole_ssr.config.configurator import Config
from recbole_ssr.core.errors import ConfigError, DataError
from recbole_ssr.data.dataloader import data_preparation
from recbole_ssr.data.dataset import create_dataset


def load(model, name, config):
    config = Config(model=model, dataset=name, config_dict=dict(QUICK, **config))
    dataset = create_dataset(config)
    return config, dataset


def assert_planted(dataset, modality):
    tokens = dataset.field2id_token[dataset.iid_field]
    features = dataset.modality_features[modality]
    assert features.dtype == torch.float32
    assert torch.all(features[0] == 0), "padding row must be zero"
    for internal_id in range(1, len(tokens)):
        assert features[internal_id, 0].item() == pytest.approx(float(str(tokens[internal_id]).lstrip("i")))


def test_mmrec_folder_loads_as_is(make_mmrec):
    root, name, frame = make_mmrec()
    config, dataset = load("VBPR", name, {"data_path": root})
    assert config["eval_protocol"] == "mmrec"
    assert dataset.modalities == ["image", "text"]  # discovered from *_feat.npy, no yaml
    assert dataset.modality_features["image"].shape == (31, 16)  # 30 items (two never interacted) + padding
    assert dataset.modality_features["text"].shape == (31, 8)
    for modality in dataset.modalities:
        assert_planted(dataset, modality)
    train, valid, test = dataset.build()
    counts = frame.x_label.value_counts()
    assert (len(train), len(valid), len(test)) == (counts[0], counts[1], counts[2])
    # the exact interactions of each phase are kept
    tokens = dataset.field2id_token
    got = {(tokens["user_id"][u], tokens["item_id"][i]) for u, i in
           zip(test.inter_feat["user_id"].numpy(), test.inter_feat["item_id"].numpy())}
    want = {(str(u), str(i)) for u, i in frame[frame.x_label == 2][["userID", "itemID"]].itertuples(index=False)}
    assert got == want


def test_mmrec_with_rating_and_timestamp_columns(make_mmrec):
    root, name, frame = make_mmrec(columns=("userID", "itemID", "rating", "timestamp", "x_label"))
    _, dataset = load("VBPR", name, {"data_path": root})
    assert len(dataset.inter_feat) == len(frame)
    assert "timestamp" in dataset.inter_feat.columns


def test_float16_and_three_modalities_of_any_width(make_mmrec):
    root, name, _ = make_mmrec(modalities={"audio": 5, "image": 7, "video": 3}, dtype=np.float16)
    _, dataset = load("VBPR", name, {"data_path": root})
    assert dataset.modalities == ["audio", "image", "video"]
    assert [f.shape[1] for f in dataset.modality_features.values()] == [5, 7, 3]
    for modality in dataset.modalities:
        assert_planted(dataset, modality)


def test_zero_modalities_load_for_id_models(make_mmrec):
    root, name, _ = make_mmrec(modalities={})
    _, dataset = load("BPR", name, {"data_path": root})
    assert dataset.modalities == []


def test_use_modalities_selects_a_subset(make_mmrec):
    root, name, _ = make_mmrec()
    _, dataset = load("VBPR", name, {"data_path": root, "use_modalities": ["text"]})
    assert dataset.modalities == ["text"]
    with pytest.raises(DataError, match="use_modalities names \\['sound'\\]"):
        load("VBPR", name, {"data_path": root, "use_modalities": ["sound"]})


def test_atomic_dataset_with_declared_id_mapping(make_atomic):
    config, name, frame = make_atomic()
    cfg, dataset = load("VBPR", name, config)
    assert cfg["eval_protocol"] == "recbole"  # atomic default; the fixed split is used with mmrec
    assert_planted(dataset, "content")
    cfg, dataset = load("VBPR", name, dict(config, eval_protocol="mmrec"))
    train, valid, test = dataset.build()
    assert (len(train), len(valid), len(test)) == tuple(frame.x_label.value_counts().sort_index())


def test_items_with_an_all_zero_feature_row_are_counted_and_kept(make_atomic):
    config, name, _ = make_atomic()
    path = config["data_path"] + f"/{name}/content_feat.npy"
    raw = np.load(path)
    rows = [line for line in open(config["data_path"] + f"/{name}/ids.txt").read().split()]
    raw[rows.index("i5")] = 0.0  # item i5's features are all zero (e.g. a genre vector with no genre)
    np.save(path, raw)
    _, dataset = load("VBPR", name, config)
    assert dataset.feature_report["content"]["items_with_zero_row"] == 1
    assert dataset.feature_report["content"]["items_without_row"] == 0
    tokens = list(dataset.field2id_token["item_id"])
    assert not dataset.modality_features["content"][tokens.index("i5")].any()  # kept, not replaced


def test_items_without_feature_row_get_the_mean_and_are_counted(make_atomic):
    config, name, _ = make_atomic(drop_items=(3, 7))
    _, dataset = load("VBPR", name, config)
    assert dataset.feature_report["content"]["items_without_row"] == 2
    tokens = list(dataset.field2id_token["item_id"])
    features = dataset.modality_features["content"]
    raw = np.load(config["data_path"] + f"/{name}/content_feat.npy")
    for token in ("i3", "i7"):
        assert np.allclose(features[tokens.index(token)].numpy(), raw.mean(axis=0), atol=1e-6)
    assert features[tokens.index("i4"), 0].item() == 4.0


def masked_items(loader, user):
    return set(loader.uid2history_item[user].tolist())


def test_protocol_masking(make_mmrec):
    root, name, frame = make_mmrec()
    for protocol in ("mmrec", "recbole"):
        # the same fixed split under both protocols: only the masking differs
        config, dataset = load("BPR", name, {"data_path": root, "eval_protocol": protocol,
                                             "benchmark_filename": ["train", "valid", "test"]})
        train, valid, test = data_preparation(config, dataset)
        tokens = dataset.field2id_token
        uid = {t: i for i, t in enumerate(tokens["user_id"])}
        iid = {t: i for i, t in enumerate(tokens["item_id"])}
        user = 1  # has train, valid and test items
        rows = frame[frame.userID == user]
        train_items = {iid[str(i)] for i in rows[rows.x_label == 0].itemID}
        valid_items = {iid[str(i)] for i in rows[rows.x_label == 1].itemID}
        assert masked_items(valid, uid[str(user)]) == train_items
        expected = train_items if protocol == "mmrec" else train_items | valid_items
        assert masked_items(test, uid[str(user)]) == expected
        # users without a test item are not evaluated on the test set
        evaluated = {tokens["user_id"][u] for u in test.uid_list.tolist()}
        assert evaluated == {str(u) for u in frame[frame.x_label == 2].userID.unique()}


def test_missing_dataset_names_files_path_and_source(tmp_path):
    with pytest.raises(DataError) as info:
        load("VBPR", "baby", {"data_path": str(tmp_path / "nowhere")})
    message = str(info.value)
    assert "baby.inter" in message and "image_feat.npy" in message and "text_feat.npy" in message
    assert str(tmp_path / "nowhere" / "baby") in message and "MMRec" in message


@pytest.mark.parametrize("case, pattern", [
    ("missing_npy", "feature file for modality 'text' not found: .*text_feat.npy"),
    ("wrong_rows", "tiny.inter: data row \\d+ has itemID \\d+, but the feature files have 20 rows \\(row i = item i"),
    ("nan", "image_feat.npy: 1 rows contain NaN or Inf \\(first: row 4\\)"),
    ("no_x_label", "tiny.inter: column 'x_label' is missing.*--eval_protocol=recbole"),
    ("bad_column", "tiny.inter: column 'itemID' must hold non-negative integers, but data row 3 has 'abc'"),
    ("missing_column", "tiny.inter: column 'itemID' is missing \\(found: userID, item, x_label\\)"),
    ("bad_label", "column 'x_label' must be 0 \\(train\\), 1 \\(valid\\) or 2 \\(test\\); found \\[7\\]"),
])
def test_bad_input_errors(make_mmrec, case, pattern):
    root, name, frame = make_mmrec()
    folder = f"{root}/{name}"
    inter = f"{folder}/{name}.inter"
    if case == "missing_npy":
        import os
        os.remove(f"{folder}/text_feat.npy")
        config = {"data_path": root, "modalities": ["image", "text"]}
    else:
        config = {"data_path": root}
    if case == "wrong_rows":  # both modalities short (files that disagree are tests/test_reliability.py's case)
        np.save(f"{folder}/image_feat.npy", np.ones((20, 16), dtype=np.float32))
        np.save(f"{folder}/text_feat.npy", np.ones((20, 8), dtype=np.float32))
    if case == "nan":
        bad = np.ones((30, 16), dtype=np.float32)
        bad[4, 2] = np.nan
        np.save(f"{folder}/image_feat.npy", bad)
    if case == "no_x_label":
        frame[["userID", "itemID"]].to_csv(inter, sep="\t", index=False)
    if case == "bad_column":
        broken = frame[["userID", "itemID", "x_label"]].astype(str)
        broken.iloc[2, 1] = "abc"
        broken.to_csv(inter, sep="\t", index=False)
    if case == "missing_column":
        frame[["userID", "itemID", "x_label"]].rename(columns={"itemID": "item"}).to_csv(inter, sep="\t", index=False)
    if case == "bad_label":
        broken = frame[["userID", "itemID", "x_label"]].copy()
        broken.iloc[0, 2] = 7
        broken.to_csv(inter, sep="\t", index=False)
    with pytest.raises(DataError, match=pattern):
        load("VBPR", name, config)


def test_no_x_label_loads_with_the_recbole_protocol(make_mmrec):
    root, name, frame = make_mmrec(columns=("userID", "itemID"))
    config, dataset = load("VBPR", name, {"data_path": root, "eval_protocol": "recbole"})
    train, valid, test = dataset.build()
    assert len(train) + len(valid) + len(test) == len(frame)


def test_unknown_model_lists_available_models():
    with pytest.raises(ConfigError) as info:
        Config(model="NoSuchModel", dataset="x", config_dict={})
    assert "VBPR" in str(info.value) and "LightGCN" in str(info.value)


def test_conversion_is_cached_and_refreshed_when_the_source_changes(make_mmrec):
    root, name, frame = make_mmrec()
    config, _ = load("VBPR", name, {"data_path": root})
    first = config["data_path"]
    config, _ = load("VBPR", name, {"data_path": root})
    assert config["data_path"] == first
    frame[frame.userID != 0][["userID", "itemID", "x_label"]].to_csv(f"{root}/{name}/{name}.inter", sep="\t",
                                                                     index=False)
    config, dataset = load("VBPR", name, {"data_path": root})
    assert config["data_path"] != first
    assert "0" not in set(dataset.field2id_token["user_id"])


def relabelled(make_mmrec, name, rules):
    """A tiny MMRec dataset whose x_label is changed by ``rules(frame) -> frame``; returns (root, name, frame)."""
    root, name, frame = make_mmrec(name=name)
    frame = rules(frame.copy())
    frame[["userID", "itemID", "x_label"]].to_csv(f"{root}/{name}/{name}.inter", sep="\t", index=False)
    return root, name, frame


def test_training_negatives_come_only_from_training_items(make_mmrec):
    """``train_neg_items: train`` (MMRec's sampler) never draws an item that is absent from training; ``all`` does."""
    def move_out_of_training(frame):  # items 0-5 occur only in valid / test
        frame.loc[frame.itemID.isin(range(6)) & (frame.x_label == 0), "x_label"] = 2
        return frame
    root, name, frame = relabelled(make_mmrec, "negatives", move_out_of_training)
    drawn = {}
    for choice in ("all", "train"):
        config, dataset = load("BPR", name, {"data_path": root, "train_neg_items": choice})
        train, _, _ = data_preparation(config, dataset)
        tokens = dataset.field2id_token[dataset.iid_field]
        np.random.seed(0)
        negatives = [batch[train.neg_item_id] for _ in range(20) for batch in train]  # 20 epochs of draws
        drawn[choice] = {int(tokens[i]) for i in torch.cat(negatives).tolist()}
        seen = {int(tokens[i]) for i in train.dataset.inter_feat[dataset.iid_field].tolist()}
    unseen = set(frame.itemID) - set(frame[frame.x_label == 0].itemID)
    assert unseen == set(range(6)) and not unseen & seen
    assert drawn["train"] <= seen and drawn["train"] == seen  # every training item is drawn, and nothing else
    assert drawn["all"] & unseen  # the uniform draw over all ids does reach them


def test_eval_users_without_training_are_dropped_exactly(make_mmrec):
    """``eval_users_without_train: drop`` (MMRec's split) removes exactly the valid/test users who have no training
    interaction, with all their valid/test interactions; ``keep`` evaluates them."""
    def no_training_for_users_1_and_2(frame):
        frame.loc[frame.userID.isin([1, 2]) & (frame.x_label == 0), "x_label"] = 2
        return frame
    root, name, frame = relabelled(make_mmrec, "coldusers", no_training_for_users_1_and_2)
    trained = set(frame[frame.x_label == 0].userID)
    for choice in ("keep", "drop"):
        config, dataset = load("BPR", name, {"data_path": root, "eval_users_without_train": choice})
        _, valid, test = data_preparation(config, dataset)
        tokens = dataset.field2id_token[dataset.uid_field]
        for label, loader in ((1, valid), (2, test)):
            rows = frame[frame.x_label == label]
            if choice == "drop":
                rows = rows[rows.userID.isin(trained)]
            evaluated = {int(tokens[u]) for u in loader.uid_list.tolist()}
            assert evaluated == set(rows.userID)
            assert len(loader.dataset.inter_feat) == len(rows)
            assert ({1, 2} <= evaluated) == (choice == "keep")


@pytest.mark.parametrize("key, value", [("train_neg_items", "valid"), ("eval_users_without_train", "hide")])
def test_protocol_switches_reject_unknown_values(make_mmrec, key, value):
    root, name, _ = make_mmrec()
    config, dataset = load("BPR", name, {"data_path": root, key: value})
    with pytest.raises(ConfigError, match=f"{key} '{value}' is unknown"):
        data_preparation(config, dataset)
