"""Fixed-seed fingerprint of every model: a refactoring that changes no number leaves this JSON unchanged.

Trains each model for a few epochs with the configured seed (``recbole_ssr.experiments.run.run``, no checkpoint) and
records its valid/test metrics, a SHA-256 of its final parameters and buffers (named, and name-free so that a
renamed attribute alone does not count as a change) and a SHA-256 of the full-sort scores of every user. Each model
runs in its own process, so no model sees state left behind by another.

    python scripts/fixed_seed_check.py --out before.json                         # embedded ml-100k, 2 epochs
    python scripts/fixed_seed_check.py --out before.json --epochs 1 \\
        --dataset tiktok --data_path /work/shared/data                           # the MMRec protocol dataset
    python scripts/fixed_seed_check.py --compare before.json after.json          # exit 1 when anything differs
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

MODELS = ["VBPR", "LATTICE", "FREEDOM", "BM3", "MGCN", "LGMRec", "SMORE", "SSR", "LightGCN"]


def tensor_digest(tensor):
    import torch

    tensor = tensor.detach()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    return hashlib.sha256(tensor.cpu().contiguous().numpy().tobytes()).hexdigest()


def fingerprint(model, dataset):
    """(named parameter digest, name-free digest, full-sort score digest, score sum) of a trained model."""
    import torch
    from recbole.data.interaction import Interaction

    state = model.state_dict()
    named = hashlib.sha256()
    for name in sorted(state):
        named.update(f"{name}:{tuple(state[name].shape)}:{tensor_digest(state[name])};".encode())
    anonymous = hashlib.sha256("".join(sorted(tensor_digest(t) for t in state.values())).encode())
    model.eval()
    scores, total = hashlib.sha256(), 0.0
    users = torch.arange(1, model.n_users)  # id 0 is RecBole's padding user
    with torch.no_grad():
        for batch in users.split(512):
            values = model.full_sort_predict(Interaction({dataset.uid_field: batch}).to(model.device))
            values = values.float().cpu().contiguous()
            scores.update(values.numpy().tobytes())
            total += float(values.double().sum())
    return named.hexdigest(), anonymous.hexdigest(), scores.hexdigest(), total


def run_one(model_name, args):
    from recbole_ssr.experiments.run import run

    captured = {}
    config = {"epochs": args.epochs, "show_progress": False, "stopping_step": 1000}
    if args.data_path:
        config["data_path"] = args.data_path
    start = time.time()
    outcome = run(model_name, args.dataset, config_dict=config, saved=False,
                  on_ready=lambda model, trainer, data: captured.update(model=model, train=data[0]))
    named, anonymous, scores, total = fingerprint(captured["model"], captured["train"].dataset)
    return {"valid_history": outcome["valid_history"], "best_valid_result": outcome["best_valid_result"],
            "test_result": outcome["test_result"], "params_sha256": named, "params_sha256_nameless": anonymous,
            "scores_sha256": scores, "score_sum": total, "seconds": round(time.time() - start, 1)}


def compare(before_path, after_path):
    before, after = (json.load(open(p)) for p in (before_path, after_path))
    keys = ["valid_history", "best_valid_result", "test_result", "params_sha256_nameless", "scores_sha256"]
    differ = False
    for model in before["models"]:
        if model not in after["models"]:
            print(f"{model}: missing from {after_path}")
            differ = True
            continue
        changed = [k for k in keys if before["models"][model].get(k) != after["models"][model].get(k)]
        named = before["models"][model]["params_sha256"] == after["models"][model]["params_sha256"]
        print(f"{model:9s} {'IDENTICAL' if not changed else 'DIFFERS in ' + ', '.join(changed)}"
              f"{'' if named or changed else ' (parameter names changed, values identical)'}"
              f"  test={after['models'][model]['test_result']}")
        differ = differ or bool(changed)
    return 1 if differ else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the fingerprints of every model to this JSON")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model, print its JSON
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.one:
        print("FINGERPRINT " + json.dumps(run_one(args.one, args)))
        return 0
    results = {"dataset": args.dataset, "epochs": args.epochs, "models": {}}
    for model in [m for m in args.models.split(",") if m]:
        command = [sys.executable, os.path.abspath(__file__), "--one", model, "--dataset", args.dataset,
                   "--epochs", str(args.epochs)] + (["--data_path", args.data_path] if args.data_path else [])
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("FINGERPRINT ")]
        if done.returncode != 0 or not lines:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            results["models"][model] = {"error": f"exit {done.returncode}"}
        else:
            results["models"][model] = json.loads(lines[-1][len("FINGERPRINT "):])
        print(model, json.dumps(results["models"][model].get("test_result", results["models"][model])), flush=True)
        if args.out:
            with open(args.out, "w") as handle:
                json.dump(results, handle, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
