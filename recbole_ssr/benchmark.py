"""``python -m recbole_ssr.benchmark FILE... [--results=OUT.json] [--overwrite]``: one benchmark table from results
made separately — single ``--results`` runs, side-by-side or tuned-benchmark JSONs, a batch's ``.runs.jsonl`` — on
this machine or others, earlier or now. Writes ``OUT.json``, ``OUT.csv``, ``OUT.tex`` and ``OUT.users.json.gz``
and prints the markdown table; every model is tested against the best one from the per-user metrics in the
sidecars beside the files (docs/significance.md). The merge itself is
:func:`recbole_ssr.experiments.side_by_side.merge`."""

from recbole_ssr.core.report import files_to_table_main
from recbole_ssr.experiments.side_by_side import merge


def main(argv=None):
    """Merge results files into one benchmark table (JSON, CSV, LaTeX and markdown) with significance tests."""
    return files_to_table_main("python -m recbole_ssr.benchmark", main.__doc__,
                               "results files: --results JSONs, side-by-side or tuned-benchmark JSONs, runs.jsonl",
                               merge, argv)


if __name__ == "__main__":
    raise SystemExit(main())
