"""The paper's analyses: ``run_recbole_ssr.py --analysis=groups|ablation|bands|sensitivity`` (docs/analysis.md).

* ``groups`` (:mod:`.groups`): test metrics per user training-degree bucket and for cold-start items, any models.
  Every ordinary run also records them (results key ``groups``).
* ``ablation`` (:mod:`.ablation`): SSR full vs each switch off and each modality subset, same seeds, one table.
* ``bands`` (:mod:`.bands`): band energy per band and modality over training, gate weights by user degree, the
  metric change when one band is removed at inference, cross-modal similarity per band (SSR only).
* ``sensitivity`` (:mod:`.sensitivity`): one-at-a-time sweeps (band_num, mask_rate, cp_rank, cl_weight, ...).

Settings: ``properties/analysis/defaults.yaml`` (each overridable by ``--key=value``). Every analysis writes its
tables (markdown + CSV), JSON and PNG plots to a new folder under ``--analysis_output`` (default
``analysis_results/``) and prints it; ``--results=PATH.json`` gets the same JSON.
"""

ANALYSES = ("groups", "ablation", "bands", "sensitivity")


def run_analysis(models, dataset, spec, overrides):
    """The analysis ``spec.analysis`` of ``models`` (``spec``: the command line's
    :class:`~recbole_ssr.core.spec.ExperimentSpec`); returns the output folder."""
    from recbole_ssr.experiments.analysis import ablation, bands, common, groups, sensitivity
    from recbole_ssr.core.errors import ConfigError
    from recbole_ssr.model.registry import get_model

    runners = {"groups": groups.run_groups, "ablation": ablation.run_ablation, "bands": bands.run_bands,
               "sensitivity": sensitivity.run_sensitivity}
    name = spec.analysis
    if name not in runners:
        raise ConfigError(f"unknown analysis '{name}': use one of {', '.join(ANALYSES)}.")
    for model in models:  # a typo fails before any training
        get_model(model)
    overrides = dict(overrides)
    settings = common.load_settings(overrides, spec.config_files)
    common.check_metric(settings, models[0], dataset, spec.config_files, overrides)
    return runners[name](models, dataset, spec, overrides, settings)
