"""Hyper-parameter search on Ray Tune (``run_recbole_ssr.py --tune=SPACE.yaml``), in three layers:

* :mod:`recbole_ssr.experiments.tune.trial`: the trial, a function trainable run inside a Ray worker;
* :mod:`recbole_ssr.experiments.tune.results`: trial records, the selection of the best trial, ``trials.csv``, ``best.yaml``;
* :mod:`recbole_ssr.experiments.tune.driver`: :func:`~recbole_ssr.experiments.tune.driver.run_search` (settings, the search folder, the
  dataset prepared once, Ray Tune, resume).

The package itself imports nothing, so a Ray worker that unpickles the trainable loads the trial layer only.
"""
