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
full-sort evaluation pass over the validation users, and the ratios to LightGCN's median step and to its epoch
(training + one evaluation).

``--clock=cpu`` times CPU seconds of the process instead of wall-clock seconds (on a loaded machine a one-thread
process waits for a core at random moments; its CPU time leaves that out). ``--threads=N`` sets torch's intra-op threads (default: torch's own choice, i.e. ``OMP_NUM_THREADS``).
``--memory`` adds each model's peak memory: every model is also run in its own fresh process (data loaded, model
built, epoch hook, the same number of training steps, one evaluation) and its peak resident set size is reported,
with the peak above the process's size once the data is loaded (the model, its graphs and the steps' working set;
Linux only: the peak is reset through /proc/self/clear_refs after loading).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def set_clock(name):
    """Time with wall-clock seconds (``wall``) or this process's CPU seconds (``cpu``: all its threads together;
    on a shared machine with one thread it leaves out the time the process waits for a core)."""
    global clock
    clock = CLOCKS[name]


def time_call(function):
    start = clock()
    function()
    return clock() - start


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


def build(name, dataset, overrides, prepared=None):
    """(model in train mode with its optimizer, trainer, train data, valid data) at the model's yaml defaults;
    ``prepared``: the output of ``recbole_ssr.training.build.prepare`` for this model and dataset, if already made."""
    from recbole_ssr.training import build as building

    built = building.build(name, dataset, config_dict=dict(overrides), prepared=prepared)
    model = built.model
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=built.config["learning_rate"])
    return model, optimizer, built.trainer, built.train_data, built.valid_data


def resident_mb(field):
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process from /proc/self/status, in MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"{field} not in /proc/self/status")


def measure_memory(name, dataset, overrides, batches):
    """Memory of one model (run in a fresh process by ``--memory``): the process's peak RSS (MiB) over data
    loading, model building, the epoch hook, ``batches`` training steps (after one warm-up) and one full-sort
    evaluation; its RSS once the data is loaded; and the peak RSS after that point (Linux: the peak is reset
    through /proc/self/clear_refs once the data is loaded, so data loading's own peak does not hide the model's)."""
    from recbole_ssr.experiments.run import peak_rss_mb
    from recbole_ssr.training.build import prepare

    prepared = prepare(name, dataset, config_dict=dict(overrides))
    loaded = resident_mb("VmRSS")
    overall = peak_rss_mb()
    with open("/proc/self/clear_refs", "w") as handle:  # reset VmHWM to the current RSS
        handle.write("5")
    model, optimizer, trainer, train_data, valid_data = build(name, dataset, overrides, prepared)
    if hasattr(model, "pre_epoch_processing"):
        model.pre_epoch_processing(0)
    time_training_steps({name: (model, optimizer)}, first_batches(train_data, batches + 1))
    trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    model_peak = resident_mb("VmHWM")
    return {"peak_rss_mb": max(overall, model_peak), "loaded_rss_mb": loaded, "model_peak_rss_mb": model_peak}


def memory_in_fresh_process(name, args):
    """:func:`measure_memory` of ``name`` in a child process with this run's arguments."""
    command = [sys.executable, os.path.abspath(__file__), f"--memory_of={name}", f"--dataset={args.dataset}",
               f"--data_path={args.data_path}", f"--batches={args.batches}"]
    command += [f"--set={item}" for item in args.set] + ([f"--threads={args.threads}"] if args.threads else [])
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("MEMORY ")]
    if done.returncode != 0 or not lines:
        print(f"memory run of {name} failed (exit {done.returncode}): {done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1][len("MEMORY "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--data_path", default="dataset/")
    parser.add_argument("--models", default="LightGCN,SSR")
    parser.add_argument("--batches", type=int, default=6, help="timed training batches per model (after 1 warm-up)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="configuration override for every model (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock seconds, or CPU seconds of this process (robust to waiting for a core on a "
                             "shared machine; with several threads it sums them)")
    parser.add_argument("--memory", action="store_true",
                        help="also each model's peak memory, from a fresh process per model")
    parser.add_argument("--memory_of", help=argparse.SUPPRESS)  # internal: one model's memory run
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)

    from recbole_ssr.config.values import parse_value

    overrides = {"data_path": args.data_path, "state": "ERROR"}
    overrides.update({k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)})
    if args.memory_of:
        print("MEMORY " + json.dumps(measure_memory(args.memory_of, args.dataset, overrides, args.batches)))
        return
    names = [m for m in args.models.split(",") if m]
    models, hooks, evaluators = {}, {}, {}
    train = None
    for name in names:
        model, optimizer, trainer, train_data, valid_data = build(name, args.dataset, overrides)
        train = train if train is not None else train_data
        hooks[name] = (time_call(lambda: model.pre_epoch_processing(0))
                       if hasattr(model, "pre_epoch_processing") else 0.0)
        evaluators[name] = (trainer, valid_data)
        models[name] = (model, optimizer)
    first_step, step_times = time_training_steps(models, first_batches(train, args.batches + 1))
    eval_times = {}
    for name, (trainer, valid_data) in evaluators.items():
        eval_times[name] = time_call(lambda: trainer.evaluate(valid_data, load_best_model=False,
                                                             show_progress=False))

    memory = {name: memory_in_fresh_process(name, args) for name in names} if args.memory else {}

    def epoch_seconds(name):
        return hooks[name] + first_step[name] + statistics.median(step_times[name]) * (len(train) - 1)

    has_reference = "LightGCN" in step_times
    reference = statistics.median(step_times["LightGCN"]) if has_reference else None
    reference_epoch = epoch_seconds("LightGCN") + eval_times["LightGCN"] if has_reference else None
    print(f"{args.dataset}: {len(train)} training batches per epoch, torch threads {torch.get_num_threads()}, "
          f"{args.batches} timed batches per model, interleaved, {args.clock} clock")
    header = ("| model | s / step (median) | × LightGCN per step | epoch hook s | first step s | est. train s / epoch "
              "| full-sort eval s | × LightGCN per epoch (train + eval) |")
    columns = 8
    if args.memory:
        header += " peak RSS MB | model phase: peak RSS above loaded data MB |"
        columns += 2
    print(header + "\n" + "|---" * columns + "|")
    for name in names:
        median = statistics.median(step_times[name])
        ratio = f"{median / reference:.1f}" if reference else "-"
        epoch = epoch_seconds(name)
        epoch_ratio = f"{(epoch + eval_times[name]) / reference_epoch:.1f}" if reference_epoch else "-"
        row = (f"| {name} | {median:.3f} | {ratio} | {hooks[name]:.2f} | {first_step[name]:.2f} | {epoch:.1f} "
               f"| {eval_times[name]:.2f} | {epoch_ratio} |")
        if args.memory:
            used = memory.get(name)
            row += (f" {used['peak_rss_mb']:.0f} | {used['model_peak_rss_mb'] - used['loaded_rss_mb']:.0f} |" if used
                    else " failed | - |")
        print(row)


if __name__ == "__main__":
    main()
