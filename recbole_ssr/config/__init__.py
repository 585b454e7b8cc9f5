"""Configuration: RecBole's ``Config`` with the plugin's yaml files (``configurator``), every setting checked with a
suggestion (``validation``) and the search-space files of ``--tune`` (``search_space``)."""
