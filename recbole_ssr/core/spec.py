"""The experiment a command line asks for, as one typed object.

The CLI (:mod:`recbole_ssr.cli`) builds an :class:`ExperimentSpec` once from its options; the library functions
(side-by-side runs, searches, the tuned benchmark, the analyses) read their options from it instead of from an
argparse ``Namespace``. Configuration keys (``--key=value``) stay a separate mapping, the ``overrides``.
"""

import dataclasses
from typing import List, Optional, Union


@dataclasses.dataclass
class ExperimentSpec:
    """Options of ``run_recbole_ssr.py`` (see ``--help``); ``None`` = the documented default."""

    model: Optional[str] = None  # one name, or several comma-separated (side-by-side, tuned benchmark)
    dataset: Optional[str] = None
    config_files: Optional[List[str]] = None  # absolute paths
    results: Optional[str] = None
    overwrite: bool = False  # --results may replace a file that is not this run's own earlier output
    seeds: int = 1
    # search (--tune) and tuned benchmark
    tune: Optional[str] = None
    num_samples: Optional[int] = None
    scheduler: Optional[str] = None
    grace_period: Optional[int] = None
    reduction_factor: Optional[float] = None
    search_alg: Optional[str] = None
    resume: Union[bool, str] = False
    cpus_per_trial: Optional[float] = None
    gpus_per_trial: Optional[float] = None
    output: Optional[str] = None
    # Ray
    address: Optional[str] = None
    num_cpus: Optional[int] = None
    cpus_per_run: Optional[float] = None
    gpus_per_run: Optional[float] = None
    # analyses
    analysis: Optional[str] = None
    analysis_from: Optional[List[str]] = None
    analysis_output: Optional[str] = None

    @classmethod
    def from_namespace(cls, namespace):
        """The spec of a parsed command line (options the spec does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(namespace).items() if k in names})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @property
    def ray_runs(self):
        """Resources of one run as a Ray task: ``{"cpus_per_run": c, "gpus_per_run": g}`` (defaults 1 and 0)."""
        return {"cpus_per_run": float(self.cpus_per_run or 1), "gpus_per_run": float(self.gpus_per_run or 0)}
