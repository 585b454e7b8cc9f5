"""What a command line runs: one run (``run``), many runs (``runner``), several models side by side
(``side_by_side``), searches and the tuned benchmark (``tune/``), the paper's analyses (``analysis/``), the choice of
SSR's ``eval_band_scale`` (``eval_band_scale``), and the statistics and LaTeX table of a comparison
(``significance``, ``latex``)."""
