"""Where an SSR training step spends its time: per-batch seconds of SSR variants, LightGCN for scale.

    OMP_NUM_THREADS=1 python benchmarks/ssr_profile.py --dataset=tiktok --data_path=../shared/data --batches=8

Each variant switches one part off (or changes one setting) relative to the defaults of properties/model/SSR.yaml;
all variants run in one process on the same batches, interleaved round-robin so that load from other processes
affects them alike. Reports the median seconds per training batch (forward + backward + Adam step) and the ratio
to LightGCN's.

``--cheb_orders=4,6,8,12,16`` times SSR at those filter degrees instead (the cost of a degree, for choosing
``cheb_order``); ``--threads=N`` sets torch's intra-op threads; ``--clock=cpu`` times CPU seconds instead of
wall-clock seconds (model_profile.py).
"""

import argparse
import statistics

import torch
from model_profile import CLOCKS, first_batches, set_clock, time_training_steps  # benchmarks/ is the script folder

VARIANTS = {
    "SSR (defaults)": {},
    "no band InfoNCE (cl_weight=0)": {"cl_weight": 0.0},
    "no masking pass (mask_weight=0)": {"mask_weight": 0.0},
    "no G-HSNO (use_operator=False)": {"use_operator": False},
    "no gate (use_gate=False)": {"use_gate": False},
    "one band (band_num=1)": {"band_num": 1},
    "cheb_order=8": {"cheb_order": 8},
    "edges frozen between refreshes (band_track_edges=False)": {"band_track_edges": False},
    "reference bank": {"band_method": "reference"},
    "frozen raw features": {"finetune_features": False},
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--cheb_orders", help="comma-separated degrees: SSR at each instead of the variants")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock seconds, or CPU seconds of this process (model_profile.py --help)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)
    variants = VARIANTS
    if args.cheb_orders:
        variants = {f"SSR cheb_order={k}": {"cheb_order": int(k)} for k in args.cheb_orders.split(",") if k}

    from recbole_ssr.training.build import prepare
    from recbole_ssr.model.registry import get_model

    base = {"data_path": args.data_path, "state": "ERROR"}
    models = {}
    for name, overrides in dict(variants, LightGCN=None).items():
        model_name = "LightGCN" if overrides is None else "SSR"
        config, _, (train, _, _) = prepare(model_name, args.dataset, config_dict=dict(base, **(overrides or {})))
        torch.manual_seed(0)
        model = get_model(model_name)(config, train.dataset)
        model.train()
        if hasattr(model, "pre_epoch_processing"):
            model.pre_epoch_processing(0)
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-4))
    _, times = time_training_steps(models, first_batches(train, args.batches + 1))  # first batch: warm-up
    reference = statistics.median(times["LightGCN"])
    batches_per_epoch = len(train)
    print(f"{args.dataset}: {batches_per_epoch} training batches per epoch, torch threads {torch.get_num_threads()}, "
          f"{args.batches} timed batches per variant, interleaved, {args.clock} clock")
    print("| variant | s / batch (median) | × LightGCN | est. s / epoch |\n|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / reference:.1f} | {median * batches_per_epoch:.1f} |")


if __name__ == "__main__":
    main()
