"""k-core filtering of a user-item interaction graph, iterated to a fixed point.

Each round counts the interactions of every user and every item among the interactions still kept, then drops
every interaction whose user **or** item has fewer than ``k``; rounds repeat until one drops nothing (the MMRec
preprocessing does the same). The result is the k-core of the bipartite graph: the largest set of interactions in
which every user and every item has at least ``k``. It is unique, so it does not depend on the removal order.
"""

import numpy as np


def kcore_mask(users, items, k):
    """Boolean mask of the interactions in the k-core.

    ``users``/``items``: integer codes (0..n-1) of equal length, one entry per (deduplicated) interaction.
    ``k`` <= 1 keeps everything. Returns ``(mask, rounds)``, ``rounds`` = filtering rounds that removed something.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)
    if k <= 1 or len(users) == 0:
        return keep, 0
    n_users = int(users.max()) + 1
    n_items = int(items.max()) + 1
    rounds = 0
    while True:
        user_degree = np.bincount(users[keep], minlength=n_users)
        item_degree = np.bincount(items[keep], minlength=n_items)
        drop = keep & ((user_degree[users] < k) | (item_degree[items] < k))
        if not drop.any():
            return keep, rounds
        keep &= ~drop
        rounds += 1
