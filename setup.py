"""Packaging: metadata and dependencies are in setup.cfg; this file only ships the yaml defaults.

The repository keeps its yaml files in the top-level ``properties/`` folder (one source of truth). A wheel installs
them as package data ``recbole_ssr/properties/``: the data-only package ``recbole_ssr.properties`` is mapped onto
that folder, so ``pip wheel .`` / ``pip install .`` copy it into the package and an sdist carries it. Nothing is
copied inside the checkout, and an editable install keeps reading the top-level folder
(:func:`recbole_ssr.core.paths.properties_dir`).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["recbole_ssr", "recbole_ssr.*"]) + ["recbole_ssr.properties"],
    package_dir={"recbole_ssr.properties": "properties"},
    package_data={"recbole_ssr.properties": ["*.yaml", "*/*.yaml"]},
)
