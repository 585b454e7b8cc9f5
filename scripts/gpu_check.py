"""Every model for one epoch on CUDA and on the CPU with the same seed: same numbers, and how fast.

    python scripts/gpu_check.py                                  # TikTok from ../shared/data, every model
    python scripts/gpu_check.py --data_path=/data --models=SSR,LightGCN --out=gpu_check

Each model runs twice, each run in its own process (a crash or a hang of one costs only that model): on the
reference device (CPU) and on the candidate (CUDA), with the same seed, the same data and the same first batch.
Per model the table gives s/epoch on both, the full-sort evaluation time, the peak GPU memory
(``torch.cuda.max_memory_allocated``) and whether the two agree. Written to ``--out``.md and ``--out``.json after
every model; the exit status is 0 when every model agrees, 1 on a disagreement or an error, 3 when no CUDA device is
visible (nothing is run then), 2 for bad arguments.

What "agree" means (float32 reductions on a GPU add in another order, and a GPU draws its random numbers from
its own generator, so only deterministic quantities are compared tightly):

* start: the initial weights are drawn on the CPU in both runs, so their sum of absolute values must match to a
  relative 1e-6 (otherwise the two runs did not start from the same model and nothing else is comparable);
* scores: the untrained model's full-sort scores of the first ``--users`` users (every item): 99 % of the |Δ| at
  most 1e-4 of the largest |score| (summation order changes the 6th-7th digit of a float32 sum; a misplaced or
  wrongly built graph changes nearly every score, while a near-tie in a top-k neighbour selection, e.g. LATTICE's
  learned graph, may flip one neighbour and move the few scores that depend on it). Models whose scoring draws
  random numbers (LGMRec's Gumbel noise at evaluation) are marked "random" here and judged by the other checks;
* loss: the training loss of the first batch (no update), ``--repeats`` times with different seeds: the means'
  relative difference at most 1e-4, or, when the loss is random (dropout, masking, edge sampling: the repeats
  differ), Welch's t of the two means at most 6 (p < 1e-3 for identically distributed losses);
* metrics: validation Recall@20 and NDCG@20 after one epoch: |Δ| at most 2 % of the CPU's value plus 5 users' worth
  (5 / evaluated users: one user moves either metric by at most 1 / users) when training draws no random numbers,
  and 25 % plus 10 users' worth when it does (dropout, masks, edge sampling: the loss check above tells which; each
  device then trains on another random draw). The loose pair was set well above the differences between two CPU
  runs whose only difference is the model's random stream (``--devices=cpu,cpu --rng_offset=N``; RESULTS.md "GPU"
  lists them); a device that breaks training moves these by far more.

``--devices=cpu,cpu`` compares two CPU runs (the script's own test; with ``--rng_offset=N`` the second run's
model-internal random stream is shifted after initialisation, emulating a device with its own generator).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = ["VBPR", "LATTICE", "FREEDOM", "BM3", "MGCN", "LGMRec", "SMORE", "SSR", "LightGCN", "BPR"]
METRICS = ("recall@20", "ndcg@20")
START_TOLERANCE = 1e-6
SCORE_TOLERANCE = 1e-4
SCORE_QUANTILE = 0.99
LOSS_TOLERANCE = 1e-4
LOSS_MAX_T = 6.0
# metrics after one epoch: |Δ| <= relative * reference + users / (evaluated users), by whether training draws random
# numbers (the module doc says how these were chosen)
METRIC_TOLERANCE = {"deterministic": (0.02, 5), "random": (0.25, 10)}
EXIT_DISAGREE, EXIT_USAGE, EXIT_NO_CUDA = 1, 2, 3
PREFIX = "GPU_CHECK "


# -- one run (in its own process) ------------------------------------------------------------------------------------
def run_one(model_name, args):
    """Train ``model_name`` for one epoch on ``args.device``; returns the measurements (see the module doc)."""
    import numpy as np
    import torch
    from recbole.data.interaction import Interaction

    from recbole_ssr.experiments.run import peak_rss_mb
    from recbole_ssr.training.build import build, prepare

    cuda = args.device == "cuda"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    config_dict = {"epochs": 1, "seed": args.seed, "show_progress": False, "state": "ERROR",
                   "checkpoint_dir": args.scratch, "data_path": args.data_path,
                   # RecBole writes gpu_id into CUDA_VISIBLE_DEVICES: keep a GPU the caller chose; '' = CPU only
                   "gpu_id": (visible.split(",")[0] or "0") if cuda else ""}
    prepared = prepare(model_name, args.dataset, config_dict=config_dict)
    config, _, (train_data, valid_data, _) = prepared
    device = config["device"]
    if cuda and device.type != "cuda":
        raise SystemExit(f"error: {model_name}: RecBole chose {device} although CUDA was asked for")
    built = build(prepared=prepared)  # the model seeded by RecBole's rule, on config["device"]
    model, trainer = built.model, built.trainer
    start_sum = float(sum(p.detach().double().abs().sum() for p in model.parameters()))

    states = (torch.get_rng_state(), torch.cuda.get_rng_state() if cuda else None, np.random.get_state(),
              train_data.generator.get_state())
    model.eval()
    users = torch.arange(1, min(model.n_users, args.users + 1))
    scorings = []
    for repeat in range(2):
        torch.manual_seed(args.seed + 100 + repeat)
        with torch.no_grad():
            model.train()
            model.eval()  # drops any evaluation cache, so that the second scoring computes again
            scores = model.full_sort_predict(Interaction({model.USER_ID: users}).to(device))
        scorings.append(scores.view(len(users), -1).float().cpu().numpy())
    np.save(os.path.join(args.scratch, f"{model_name}-{args.role}.npy"), scorings[0])
    batch = next(iter(train_data)).to(device)
    hook = getattr(model, "pre_epoch_processing", None)
    losses = []
    for repeat in range(args.repeats):  # each repeat draws anew what an epoch draws (graph sampling, masks, ...)
        torch.manual_seed(args.seed + 1 + repeat)
        model.train()
        if callable(hook):
            hook(0)
        with torch.no_grad():
            loss = model.calculate_loss(batch)
        losses.append(float(sum(loss) if isinstance(loss, tuple) else loss))

    torch.set_rng_state(states[0])
    if cuda:
        torch.cuda.set_rng_state(states[1])
    np.random.set_state(states[2])
    train_data.generator.set_state(states[3])
    if args.rng_offset:
        torch.manual_seed(args.seed + args.rng_offset)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    trainer.fit(train_data, None, saved=False, verbose=False)  # one epoch, its pre-epoch hook included
    if cuda:
        torch.cuda.synchronize()
    train_seconds = time.time() - started
    started = time.time()
    valid = trainer.evaluate(valid_data, load_best_model=False)
    if cuda:
        torch.cuda.synchronize()
    return {"device": str(device), "start_sum": start_sum, "losses": losses,
            "random_scoring": bool(np.any(scorings[0] != scorings[1])),
            "train_seconds": train_seconds, "eval_seconds": time.time() - started,
            "valid": {k.lower(): float(v) for k, v in dict(valid).items()},
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
            "valid_users": len(getattr(valid_data, "uid_list", ())),
            "peak_rss_mb": round(peak_rss_mb(), 1), "torch_threads": torch.get_num_threads()}


# -- comparison ------------------------------------------------------------------------------------------------------
def is_random(losses):
    """Whether repeated first-batch losses (different seeds) differ: the model draws random numbers in training."""
    return max(losses) - min(losses) > 1e-6 * max(abs(statistics.fmean(losses)), 1e-12)


def compare_losses(reference, candidate):
    """(agrees, text) for two lists of first-batch losses (module doc, "loss")."""
    ref_mean, cand_mean = statistics.fmean(reference), statistics.fmean(candidate)
    if not (math.isfinite(ref_mean) and math.isfinite(cand_mean)):
        return False, f"not finite ({ref_mean:g} vs {cand_mean:g})"
    relative = abs(cand_mean - ref_mean) / max(abs(ref_mean), 1e-12)
    if not (is_random(reference) or is_random(candidate)) or relative <= LOSS_TOLERANCE:
        return relative <= LOSS_TOLERANCE, f"{ref_mean:.6g} vs {cand_mean:.6g} (rel {relative:.1e})"
    if len(reference) < 2 or len(candidate) < 2:
        return False, "random loss: --repeats must be at least 2"
    error = math.sqrt(statistics.variance(reference) / len(reference)
                      + statistics.variance(candidate) / len(candidate))
    t = abs(cand_mean - ref_mean) / error if error > 0 else math.inf
    return t <= LOSS_MAX_T, f"random: {ref_mean:.5g} vs {cand_mean:.5g} (t {t:.1f})"


def compare_metric(reference, candidate, users, random_training):
    """(agrees, text) for one validation metric after an epoch (module doc, "metrics")."""
    relative, per_user = METRIC_TOLERANCE["random" if random_training else "deterministic"]
    allowed = relative * abs(reference) + per_user / max(users, 1)
    difference = abs(candidate - reference)
    return (math.isfinite(candidate) and difference <= allowed,
            f"{reference:.4f} vs {candidate:.4f} (|Δ| {difference:.4f}, allowed {allowed:.4f})")


def compare_scores(reference, candidate):
    """(agrees, text) for two score matrices (module doc, "scores")."""
    import numpy as np

    if reference.shape != candidate.shape:
        return False, f"shapes {reference.shape} vs {candidate.shape}"
    if not np.all(np.isfinite(candidate)):
        return False, "not finite"
    scale = max(float(np.abs(reference).max()), 1e-12)
    difference = np.abs(candidate - reference) / scale
    typical, largest = float(np.quantile(difference, SCORE_QUANTILE)), float(difference.max())
    return typical <= SCORE_TOLERANCE, f"p{100 * SCORE_QUANTILE:g} rel {typical:.1e} (max {largest:.1e})"


def compare(reference, candidate, ref_scores=None, cand_scores=None):
    """Per-check verdicts of two runs of one model: {check: (agrees or None for not compared, text)}."""
    checks = {}
    start = abs(candidate["start_sum"] - reference["start_sum"]) / max(abs(reference["start_sum"]), 1e-12)
    checks["start"] = (start <= START_TOLERANCE, f"rel {start:.1e}")
    if reference["random_scoring"] or candidate["random_scoring"]:
        checks["scores"] = (None, "random")
    elif ref_scores is not None and cand_scores is not None:
        checks["scores"] = compare_scores(ref_scores, cand_scores)
    checks["loss"] = compare_losses(reference["losses"], candidate["losses"])
    random_training = is_random(reference["losses"]) or is_random(candidate["losses"])
    for metric in METRICS:
        if metric not in reference["valid"] or metric not in candidate["valid"]:
            checks[metric] = (False, "missing")
            continue
        checks[metric] = compare_metric(reference["valid"][metric], candidate["valid"][metric],
                                        reference["valid_users"], random_training)
    return checks


def agrees(checks):
    return all(ok is not False for ok, _ in checks.values())


# -- driver ----------------------------------------------------------------------------------------------------------
def run_in_subprocess(model, role, device, args, scratch):
    command = [sys.executable, os.path.abspath(__file__), "--one", model, "--role", role, "--device", device,
               "--scratch", scratch, "--dataset", args.dataset, "--data_path", args.data_path,
               "--seed", str(args.seed), "--users", str(args.users), "--repeats", str(args.repeats),
               "--rng_offset", str(args.rng_offset if role == "candidate" else 0)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{device}: no result within --timeout={args.timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(PREFIX)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(done.stderr[-3000:], file=sys.stderr)
        return {"error": f"{device}: exit {done.returncode}: {tail[:300]}"}
    return json.loads(lines[-1][len(PREFIX):])


def table(results, args):
    reference, candidate = args.devices
    lines = [f"| model | s/epoch {reference} | s/epoch {candidate} | eval s {reference} | eval s {candidate} | "
             f"peak GPU MB | start | scores | first-batch loss | valid Recall@20 | valid NDCG@20 | agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, entry in results["models"].items():
        if "error" in entry:
            lines.append(f"| {model} | | | | | | | | | | | **error**: {entry['error']} |")
            continue
        ref, cand, checks = entry["reference"], entry["candidate"], entry["checks"]
        peak = cand["peak_gpu_mb"] if cand["peak_gpu_mb"] is not None else ref["peak_gpu_mb"]

        def cell(name):
            ok, text = checks.get(name, (None, "-"))
            return text if ok is not False else f"**{text}**"

        lines.append(f"| {model} | {ref['train_seconds']:.2f} | {cand['train_seconds']:.2f} | "
                     f"{ref['eval_seconds']:.2f} | {cand['eval_seconds']:.2f} | "
                     f"{'-' if peak is None else f'{peak:.0f}'} | {cell('start')} | {cell('scores')} | "
                     f"{cell('loss')} | {cell('recall@20')} | {cell('ndcg@20')} | "
                     f"{'yes' if entry['agree'] else '**no**'} |")
    return "\n".join(lines)


def write_outputs(results, args):
    from recbole_ssr.core.safe_io import atomic_write, write_json

    write_json(args.out + ".json", results)
    header = (f"# GPU check: {args.dataset}, seed {args.seed}, one epoch, {args.devices[0]} vs {args.devices[1]}\n\n"
              f"Command: `{results['command']}`; {results['machine']}\n\n"
              f"Tolerances: start rel {START_TOLERANCE:g}; scores p{100 * SCORE_QUANTILE:g} rel "
              f"{SCORE_TOLERANCE:g}; loss rel "
              f"{LOSS_TOLERANCE:g} (deterministic) or Welch t <= {LOSS_MAX_T:g} (random); metrics |Δ| <= "
              + "; ".join(f"{r:g}·ref + {u}/users ({kind} training)" for kind, (r, u) in METRIC_TOLERANCE.items())
              + " (scripts/gpu_check.py docstring).\n\n")
    with atomic_write(args.out + ".md") as handle:
        handle.write(header + table(results, args) + "\n")


def machine_text(devices):
    import platform

    import torch

    text = f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    if "cuda" in devices and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="tiktok")
    parser.add_argument("--data_path", default=os.path.join("..", "shared", "data"),
                        help="folder holding the dataset folder (default ../shared/data)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: every model)")
    parser.add_argument("--out", default="gpu_check", help="writes OUT.md and OUT.json (default gpu_check)")
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--devices", default="cpu,cuda", help="reference,candidate (default cpu,cuda)")
    parser.add_argument("--users", type=int, default=256, help="users whose untrained scores are compared")
    parser.add_argument("--repeats", type=int, default=5, help="first-batch losses per run (different seeds)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per run before it counts as an error")
    parser.add_argument("--rng_offset", type=int, default=0, help="shift the candidate's random stream")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run, prints its JSON
    parser.add_argument("--role", default="reference", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.data_path = os.path.abspath(args.data_path)
    if args.one:
        print(PREFIX + json.dumps(run_one(args.one, args)), flush=True)
        return 0
    args.devices = [d.strip() for d in args.devices.split(",")]
    if len(args.devices) != 2 or any(d not in ("cpu", "cuda") for d in args.devices):
        parser.error(f"--devices must be two of cpu/cuda, e.g. cpu,cuda (got {','.join(args.devices)})")
    models = [m for m in args.models.split(",") if m]
    if not models:
        parser.error("--models is empty")
    if not os.path.isdir(os.path.join(args.data_path, args.dataset)):
        print(f"error: no dataset folder {os.path.join(args.data_path, args.dataset)}; pass --data_path=FOLDER "
              f"holding {args.dataset}/ (or --dataset=NAME)", file=sys.stderr)
        return EXIT_USAGE
    if "cuda" in args.devices:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device is visible to torch (torch.cuda.is_available() is False: no GPU, a "
                  f"CPU-only torch build ({torch.__version__}), or CUDA_VISIBLE_DEVICES hides it); nothing was "
                  "run. --devices=cpu,cpu checks the script itself.", file=sys.stderr)
            return EXIT_NO_CUDA
    from recbole_ssr.core.errors import ConfigError
    from recbole_ssr.model.registry import get_model

    for model in models:
        try:
            get_model(model)
        except ConfigError as exc:
            print(f"error: --models: {exc}", file=sys.stderr)
            return EXIT_USAGE
    results = {"command": " ".join(["python", "scripts/gpu_check.py"] + list(sys.argv[1:] if argv is None else argv)),
               "machine": machine_text(args.devices), "dataset": args.dataset, "seed": args.seed,
               "devices": args.devices, "tolerances": {"start": START_TOLERANCE, "scores": SCORE_TOLERANCE,
                                                   "scores_quantile": SCORE_QUANTILE,
                                                   "loss": LOSS_TOLERANCE, "loss_t": LOSS_MAX_T,
                                                   "metrics": METRIC_TOLERANCE}, "models": {}}
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        for model in models:
            runs = {role: run_in_subprocess(model, role, device, args, scratch)
                    for role, device in zip(("reference", "candidate"), args.devices)}
            errors = [run["error"] for run in runs.values() if "error" in run]
            if errors:
                entry = {"error": "; ".join(errors), "agree": False}
            else:
                arrays = [np.load(os.path.join(scratch, f"{model}-{role}.npy")) for role in runs]
                checks = compare(runs["reference"], runs["candidate"], *arrays)
                entry = {**runs, "checks": {k: list(v) for k, v in checks.items()}, "agree": agrees(checks)}
            results["models"][model] = entry
            print(f"{model}: {'agrees' if entry['agree'] else 'DISAGREES'} "
                  f"{entry.get('error') or json.dumps({k: v[1] for k, v in entry['checks'].items()})}", flush=True)
            write_outputs(results, args)
    print(table(results, args))
    return 0 if all(entry["agree"] for entry in results["models"].values()) else EXIT_DISAGREE


if __name__ == "__main__":
    sys.exit(main())
