"""The MMRec per-user train/valid/test split (``x_label`` 0/1/2), random with a seed or chronological.

The rule (MMRec's ``preprocessing/1splitting.ipynb``, re-implemented): every user's interactions are put in an
order -- a random shuffle for ``random``, oldest first for ``chronological`` -- and, with ``n`` interactions:

* ``n < 10``: the first ``n - 2`` are train, the next one valid, the last one test;
* ``n >= 10``: ``h = floor(0.2 n)`` are held out, of which ``floor(h / 2)`` valid and the rest test; the first
  ``n - h`` are train (valid then test follow in the order).

So e.g. n = 5 -> 3/1/1, n = 10 -> 8/1/1, n = 15 -> 12/1/2, n = 23 -> 19/2/2, n = 100 -> 80/10/10.
MMRec only meets n >= 5 (after its 5-core); with ``--kcore`` below 3 a user can have fewer interactions, and the
rule is extended so every user keeps a training interaction: n = 1 -> train only, n = 2 -> 1 train + 1 test.

Random order: one ``numpy.random.default_rng(seed)`` draws a uniform key per interaction, in the canonical order
(userID, itemID) of the re-indexed data; each user's interactions are sorted by key. The same input and seed
therefore always give the same split, whatever the row order of the raw file after id mapping.
Chronological order: by timestamp, ties kept in the raw file's row order (the seed is not used).
"""

import numpy as np

SPLITS = ("random", "chronological")


def split_sizes(n):
    """``(train, valid, test)`` sizes for a user with ``n`` interactions (vectorised over arrays)."""
    n = np.asarray(n, dtype=np.int64)
    held = n // 5  # floor(0.2 n): exact integer arithmetic, equal to MMRec's int(n * 0.2)
    train = np.where(n < 10, n - 2, n - held)
    valid = np.where(n < 10, 1, held // 2)
    train = np.where(n <= 2, 1, train)
    train = np.where(n <= 0, 0, train)
    valid = np.where(n <= 2, 0, valid)
    test = n - train - valid
    return train, valid, test


def assign_labels(users, items, timestamps, rows, split="random", seed=999):
    """x_label per interaction and the output order.

    ``users``/``items``: re-indexed ids; ``timestamps``: numbers; ``rows``: the raw file row of each interaction.
    Returns ``(labels, order)``: ``order`` lists interaction indices grouped by user (ascending userID) and, within
    a user, in split order (train, then valid, then test); ``labels[i]`` is the x_label of interaction ``i``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if split == "random":
        canonical = np.lexsort((items, users))
        keys = np.empty(len(users), dtype=np.float64)
        keys[canonical] = np.random.default_rng(seed).random(len(users))
        order = np.lexsort((keys, users))
    elif split == "chronological":
        order = np.lexsort((np.asarray(rows), np.asarray(timestamps), users))
    else:
        raise ValueError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    sorted_users = users[order]
    counts = np.bincount(sorted_users, minlength=int(users.max()) + 1 if len(users) else 0)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(counts) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(order)) - starts[sorted_users]
    train, valid, _ = split_sizes(counts[sorted_users])
    sorted_labels = np.where(rank < train, 0, np.where(rank < train + valid, 1, 2)).astype(np.int64)
    labels = np.empty(len(users), dtype=np.int64)
    labels[order] = sorted_labels
    return labels, order
