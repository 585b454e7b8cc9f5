"""Seconds per training step and per full-sort evaluation of several models, timed interleaved in one process.

    OMP_NUM_THREADS=1 python benchmarks/model_profile.py --dataset=tiktok --data_path=../shared/data \
        --models=BPR,LightGCN,VBPR,LATTICE,FREEDOM,BM3,MGCN,LGMRec,SMORE,SSR --batches=6

Every model is built with its yaml defaults (plus ``--set key=value`` overrides for all, e.g. ``learning_rate``) and
runs the same training batches round-robin: model 1 batch 1, model 2 batch 1, ..., so that load from other
processes hits all of them alike and the ratios stay meaningful on a shared machine. The per-epoch hooks
(``pre_epoch_processing``: FREEDOM's pruning, LATTICE's graph learning, SSR's band edges) run once before the
timed steps and are timed separately; the first step after the hook is timed separately too, since some models do
per-epoch work in it (LATTICE learns its item graphs there, SSR re-estimates its band edges) — it also carries
one-time warm-up, so the estimate errs high. Reports the median seconds per later step (forward + backward +
optimizer step), the estimated training seconds per epoch (hook + first step + median × (batches − 1)), one
full-sort evaluation pass over the validation users, and the ratio to LightGCN's median step.
"""

import argparse
import statistics
import time

import torch


def time_call(function):
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def first_batches(train_data, count):
    """The first ``count`` training batches of a data loader."""
    batches = []
    for interaction in train_data:
        batches.append(interaction)
        if len(batches) == count:
            break
    return batches


def time_training_steps(models, batches):
    """Round-robin training steps (forward + backward + optimizer step) of ``{name: (model, optimizer)}`` on the
    same ``batches``: model 1 batch 1, model 2 batch 1, ... so that outside load hits every model alike.
    Returns ({name: seconds of the first step}, {name: [seconds of every later step]})."""
    first_step, step_times = {}, {name: [] for name in models}
    for index, interaction in enumerate(batches):
        for name, (model, optimizer) in models.items():
            def step():
                loss = model.calculate_loss(interaction.to(model.device))
                loss = sum(loss) if isinstance(loss, tuple) else loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            seconds = time_call(step)
            if index == 0:  # the first batch warms caches and carries per-epoch work (LATTICE, SSR)
                first_step[name] = seconds
            else:
                step_times[name].append(seconds)
    return first_step, step_times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--models", default="LightGCN,SSR")
    parser.add_argument("--batches", type=int, default=6, help="timed training batches per model (after 1 warm-up)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="configuration override for every model (repeatable)")
    args = parser.parse_args()

    from recbole_ssr.cli import parse_value
    from recbole_ssr.quick_start import prepare
    from recbole_ssr.utils import get_model, get_trainer

    overrides = {"data_path": args.data_path, "state": "ERROR"}
    overrides.update({k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)})
    names = [m for m in args.models.split(",") if m]
    models, hooks, evaluators = {}, {}, {}
    train = None
    for name in names:
        config, _, (train_data, valid_data, _) = prepare(name, args.dataset, config_dict=dict(overrides))
        train = train if train is not None else train_data
        torch.manual_seed(0)
        model = get_model(name)(config, train_data.dataset).to(config["device"])
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
        hooks[name] = (time_call(lambda: model.pre_epoch_processing(0))
                       if hasattr(model, "pre_epoch_processing") else 0.0)
        trainer = get_trainer(config["MODEL_TYPE"], name)(config, model)
        evaluators[name] = (trainer, valid_data)
        models[name] = (model, optimizer)
    first_step, step_times = time_training_steps(models, first_batches(train, args.batches + 1))
    eval_times = {}
    for name, (trainer, valid_data) in evaluators.items():
        eval_times[name] = time_call(lambda: trainer.evaluate(valid_data, load_best_model=False,
                                                             show_progress=False))

    reference = statistics.median(step_times["LightGCN"]) if "LightGCN" in step_times else None
    print(f"{args.dataset}: {len(train)} training batches per epoch, torch threads {torch.get_num_threads()}, "
          f"{args.batches} timed batches per model, interleaved")
    print("| model | s / step (median) | × LightGCN | epoch hook s | first step s | est. train s / epoch "
          "| full-sort eval s |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        median = statistics.median(step_times[name])
        ratio = f"{median / reference:.1f}" if reference else "-"
        epoch = hooks[name] + first_step[name] + median * (len(train) - 1)
        print(f"| {name} | {median:.3f} | {ratio} | {hooks[name]:.2f} | {first_step[name]:.2f} | {epoch:.1f} "
              f"| {eval_times[name]:.2f} |")


if __name__ == "__main__":
    main()
