"""Describe a fixed MMRec split: who is evaluated, and on which items.

    python benchmarks/split_stats.py ../shared/data/tiktok/tiktok.inter [--bounds 5,10,20]

Prints, for the train / valid / test parts of an MMRec ``.inter`` file (columns userID, itemID, x_label):
the training-degree histogram of users, the evaluated users per degree bucket (the buckets of the ``groups``
metrics), how often a held-out item has a larger item id than every training item of its user (a time-ordered
leave-latest-out split when item ids follow time), and the training degree of the held-out items per bucket
(cold = no training interaction). Used for the TikTok observations in RESULTS.md.
"""

import argparse

import numpy as np
import pandas as pd


def bucket_labels(bounds):
    labels, low = [], 0
    for high in bounds:
        labels.append(f"<={high}" if low == 0 else f"{low + 1}-{high}")
        low = high
    return labels + [f">{bounds[-1]}"]


def bucket_of(degree, bounds):
    return np.searchsorted(np.asarray(bounds), degree, side="left")


def describe(inter_path, bounds):
    data = pd.read_csv(inter_path, sep="\t")
    missing = {"userID", "itemID", "x_label"} - set(data.columns)
    if missing:
        raise SystemExit(f"error: {inter_path} lacks column(s) {sorted(missing)}; expected an MMRec .inter file.")
    train = data[data.x_label == 0]
    user_degree = train.groupby("userID").size()
    item_degree = train.groupby("itemID").size()
    latest_train_item = train.groupby("userID").itemID.max()
    labels = bucket_labels(bounds)

    edges = [0, 1, 2, 3, 5, 10, 20, 50, 100, 1000, np.inf]
    counts, _ = np.histogram(user_degree.values, bins=edges)
    print(f"{inter_path}: {data.userID.nunique()} users, {data.itemID.nunique()} items, "
          f"{len(train)} / {(data.x_label == 1).sum()} / {(data.x_label == 2).sum()} train/valid/test")
    print("users by training degree: " + ", ".join(
        f"[{lo:g},{hi:g}): {c}" for lo, hi, c in zip(edges[:-1], edges[1:], counts) if c))
    for name, label in (("valid", 1), ("test", 2)):
        part = data[data.x_label == label]
        degree = part.userID.map(user_degree).fillna(0).to_numpy()
        bucket = bucket_of(degree, bounds)
        newer = part.itemID.to_numpy() > part.userID.map(latest_train_item).fillna(-1).to_numpy()
        held_degree = part.itemID.map(item_degree).fillna(0).to_numpy()
        print(f"\n{name}: {len(part)} interactions of {part.userID.nunique()} users; item id larger than every "
              f"training item of the user: {newer.sum()} ({newer.mean():.1%})")
        print("| bucket | users | held-out items | cold items | item train degree median | item id median |")
        print("|---|---|---|---|---|---|")
        for index, text in enumerate(labels):
            chosen = bucket == index
            if not chosen.any():
                print(f"| {text} | 0 | 0 | 0 | - | - |")
                continue
            print(f"| {text} | {part.userID[chosen].nunique()} | {chosen.sum()} | {(held_degree[chosen] == 0).sum()} "
                  f"| {np.median(held_degree[chosen]):g} | {np.median(part.itemID.to_numpy()[chosen]):g} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("inter", help="an MMRec .inter file (userID, itemID, x_label)")
    parser.add_argument("--bounds", default="5,10,20", help="user-degree bucket bounds (as group_degree_bounds)")
    args = parser.parse_args()
    describe(args.inter, [int(b) for b in args.bounds.split(",")])


if __name__ == "__main__":
    main()
