"""Command line of ``python -m recbole_ssr.data.prepare`` (see the package docstring for what it does)."""

import argparse
import sys

from recbole_ssr.core.errors import UsageError, one_line_parser
from recbole_ssr.data.prepare.errors import PrepareError

EPILOG = """\
example:
  python -m recbole_ssr.data.prepare --interactions reviews_Baby_5.json.gz --items meta_Baby.json.gz \\
      --images images/ --output dataset/baby_mm --name baby_mm
  then train with data_path=dataset, dataset=baby_mm.

Items without text/image get the mean row of the others (--fallback zero: zeros); they are listed in
missing_text_itemIDs.csv / missing_image_itemIDs.csv.
"""


def build_parser():
    parser = one_line_parser(
        prog="python -m recbole_ssr.data.prepare",
        description="Build an MMRec-layout multimodal dataset (k-core, id mapping, per-user split, text and "
                    "image features) from raw interactions, item metadata and item images.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", required=True, metavar="FILE",
                        help="user-item interactions: .csv/.tsv/.json(l)[.gz] with user_id,item_id[,rating]"
                             "[,timestamp] or Amazon's reviewerID,asin,overall,unixReviewTime")
    parser.add_argument("--items", metavar="FILE",
                        help="item metadata (item_id or asin + any of title, description, brand, categories); "
                             "gives text_feat.npy")
    parser.add_argument("--images", metavar="DIR", help="folder of <item_id>.jpg|.png files; gives image_feat.npy")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="dataset folder to write, normally <data_path>/<NAME>")
    parser.add_argument("--name", required=True, help="dataset name: writes <output>/<NAME>.inter")
    parser.add_argument("--kcore", type=int, default=5, metavar="K",
                        help="keep only users and items with at least K interactions, iterated (default 5; "
                             "0 = off)")
    parser.add_argument("--seed", type=int, default=999, metavar="N", help="seed of the random split (default 999)")
    parser.add_argument("--split", choices=("random", "chronological"), default="random",
                        help="order of each user's interactions before MMRec's 8:1:1-style rule: seeded shuffle "
                             "(default) or by time (latest held out)")
    parser.add_argument("--text-encoder", default=None, metavar="SPEC",
                        help="minilm (default: all-MiniLM-L6-v2, offline), hashing, a local "
                             "sentence-transformers folder, or MODULE:FACTORY")
    parser.add_argument("--image-encoder", default=None, metavar="SPEC",
                        help="efficientnet-lite0 (default, offline), efficientnet-liteN:WEIGHTS.pth, thumbnail, "
                             "or MODULE:FACTORY")
    parser.add_argument("--fallback", choices=("mean", "zero"), default="mean",
                        help="row for items without text/image: mean of the others (default) or zeros")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="treat unreadable image files as missing images instead of stopping")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="encoder batch size (default 32)")
    parser.add_argument("--device", default="auto", help="torch device for the encoders: auto (default), cpu, "
                                                          "cuda, cuda:1, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines, only errors")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files of an earlier run into --output that were edited since it wrote them")
    return parser


def main(argv=None):
    """Run the command; returns the exit status (0 ok, 1 bad input, 2 bad usage)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def log(message):
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    from recbole_ssr.data.prepare.pipeline import prepare_dataset

    try:
        result = prepare_dataset(
            interactions=args.interactions, items=args.items, images=args.images, output=args.output,
            name=args.name, kcore=args.kcore, seed=args.seed, split=args.split,
            text_encoder=args.text_encoder, image_encoder=args.image_encoder, batch_size=args.batch_size,
            device=args.device, fallback=args.fallback, skip_bad_images=args.skip_bad_images,
            progress=False if args.quiet else None, log=log, overwrite=args.overwrite)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    if not args.quiet:
        counts = result.split_counts
        print(f"{result.output}: {result.n_users} users, {result.n_items} items, {result.n_interactions} "
              f"interactions (train {counts['train']}, valid {counts['valid']}, test {counts['test']})")
    return 0
