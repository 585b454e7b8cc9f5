"""Bottom-layer helpers for results: plain JSON values, mean ± std, markdown and CSV tables, and reading results
files back. Each exists once here; every other module imports it from here.

Imports point down only: this module needs :mod:`recbole_ssr.core.errors` and :mod:`recbole_ssr.core.safe_io`, nothing else
of the package (no torch, no RecBole), so the CLI, the runners, the analyses and the trainer can all use it.
"""

import csv
import glob
import json
import math
import os

from recbole_ssr.core.errors import RecboleSSRError
from recbole_ssr.core.safe_io import PROVENANCE_KEY, atomic_write, read_jsonl


def plain(value):
    """``value`` as plain JSON/yaml data: dict keys as strings, tuples as lists, numpy/torch scalars as Python
    numbers, anything else unknown as its ``str``."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return str(value)


def mean_std(values):
    """(mean, sample standard deviation (ddof 1; 0 for one value)) of ``values``, None and NaN left out;
    (nan, nan) when nothing is left."""
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return (math.nan, math.nan)
    mean = sum(values) / len(values)
    if len(values) == 1:
        return (mean, 0.0)
    return (mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)))


def markdown_table(header, rows):
    """A markdown table: ``header`` cells, then one line per row of cells."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path, rows):
    """``rows`` (dicts) as CSV, columns in first-seen order, lists and mappings as JSON; written atomically."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or ["empty"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _cell(value):
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return value


def load_runs(paths, warn=None):
    """Runs from result files: single-run ``--results`` JSONs, side-by-side/analysis JSONs (key ``runs``) or
    ``runs.jsonl`` progress files (a torn line, left by a kill mid-write, is skipped with a warning giving its line
    number: ``warn(text)``, default stderr). Raises RecboleSSRError naming the file when one is none of these."""
    runs = []
    for path in paths:
        if os.path.isdir(path):
            raise RecboleSSRError(f"{path} is a folder, but a results file is expected (a --results JSON, a "
                                  "side-by-side/analysis JSON or a runs.jsonl).")
        try:
            if path.endswith(".jsonl"):
                found, skipped = read_jsonl(path, warn)
                if skipped and not found:
                    raise ValueError(f"no line of it is a complete JSON record (lines {skipped[:5]})")
            else:
                with open(path, encoding="utf-8") as handle:
                    payload = json.load(handle)
                found = payload["runs"] if isinstance(payload, dict) and "runs" in payload else [payload]
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise RecboleSSRError(f"{path}: cannot read results ({reason}); expected the JSON written by --results, a "
                                  "side-by-side/analysis JSON or a runs.jsonl.") from None
        for run in found:
            if not isinstance(run, dict) or "model" not in run or ("test_result" not in run and "status" not in run):
                raise RecboleSSRError(f"{path}: not a results file of run_recbole_ssr.py (expected the JSON written "
                                      "by --results, a side-by-side/analysis JSON or a runs.jsonl).")
            run = {k: v for k, v in run.items() if k != PROVENANCE_KEY}
            run.setdefault("status", "ok")
            run.setdefault("seed", (run.get("config") or {}).get("seed"))
            runs.append(run)
    return runs


def read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def find_unfinished(manifests, matches):
    """The folder of the newest manifest (glob ``manifests``) that ``matches(info)`` and is not ``done``; None if
    there is none (an unreadable manifest is skipped)."""
    found = []
    for path in glob.glob(manifests):
        try:
            info = read_json(path)
        except (OSError, ValueError):
            continue
        if matches(info) and info.get("status") != "done":
            found.append((info.get("created", ""), os.path.dirname(path)))
    return max(found)[1] if found else None


def resumable_folder(resume, root, pattern, manifest, belongs, what, subject):
    """The one rule of ``--resume`` (searches and tuned benchmarks): ``(folder, its manifest)`` to continue.

    ``resume``: a folder (``--resume=FOLDER``) or True (the newest unfinished folder under ``root`` matching the
    glob ``pattern``). ``manifest``: the manifest's file name in a folder; ``belongs(info)``: whether a manifest is
    one of ``subject`` (e.g. "VBPR on baby"); ``what``: "search" or "benchmark". A folder without manifest, of
    another subject, or already finished is a :class:`~recbole_ssr.core.errors.ConfigError` saying what to do."""
    from recbole_ssr.core.errors import ConfigError

    if isinstance(resume, str):
        folder = os.path.abspath(resume)
        if not os.path.isfile(os.path.join(folder, manifest)):
            raise ConfigError(f"--resume={resume}: no {manifest} in {folder}; pass a {what} folder (one made by "
                              f"--tune, under --output, default tune_results/).")
    else:
        folder = find_unfinished(os.path.join(root, pattern, manifest), belongs)
        if folder is None:
            raise ConfigError(f"--resume: no unfinished {what} of {subject} under {root}. Run without --resume to "
                              "start a new one (or pass --resume=FOLDER / --output=ROOT).")
    info = read_json(os.path.join(folder, manifest))
    if not belongs(info):
        found = f"{info.get('model') or ','.join(info.get('models') or [])} on {info.get('dataset')}"
        raise ConfigError(f"--resume: {folder} is a {what} of {found}, not of {subject}.")
    if info.get("status") == "done":
        raise ConfigError(f"--resume: the {what} in {folder} already finished; start a new one without --resume.")
    return folder, info


def files_to_table_main(prog, description, files_help, action, argv=None):
    """A ``python -m`` command of the form ``PROG FILE... [--results=OUT.json] [--overwrite]`` that runs
    ``action(files, results, overwrite)``; a RecboleSSRError (a bad option included) is one ``error:`` line and exit
    status 2."""
    import sys

    from recbole_ssr.core.errors import one_line_parser

    parser = one_line_parser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("files", nargs="+", help=files_help)
    parser.add_argument("--results", default=None,
                        help="where to write the JSON (and the CSV, the LaTeX table and the per-user sidecar beside it)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow --results to replace a file that is not this command's own earlier output")
    try:
        args = parser.parse_args(argv)
        action(args.files, args.results, args.overwrite)
    except RecboleSSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
