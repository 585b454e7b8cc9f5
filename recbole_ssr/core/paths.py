"""Where the package finds its yaml defaults (a bottom layer: imports nothing of ours but errors).

The yaml files live in the repository's top-level ``properties/`` folder (the one source of truth). A wheel ships
them inside the package as ``recbole_ssr/properties/`` (setup.py maps that package-data folder onto the top-level
one), so an installed package finds them beside its code, whatever the working directory.
"""

import os

from recbole_ssr.core.errors import ConfigError

ENV_VAR = "RECBOLE_SSR_PROPERTIES"
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # recbole_ssr/


def _is_properties(path):
    return os.path.isfile(os.path.join(path, "overall.yaml"))


def properties_dir():
    """The ``properties/`` folder: ``$RECBOLE_SSR_PROPERTIES`` (a whole folder of your own, e.g. a copy of the
    shipped one), else the one inside the installed package (wheel), else the repository's top-level one (source
    checkout, editable install)."""
    override = os.environ.get(ENV_VAR)
    if override:
        if not os.path.isdir(override):
            raise ConfigError(f"{ENV_VAR}={override} is not a folder. Point it at a copy of the shipped properties/ "
                              f"folder, or unset it to use the shipped one.")
        return override
    candidates = [
        os.path.join(_PACKAGE_DIR, "properties"),  # installed from a wheel
        os.path.join(os.path.dirname(_PACKAGE_DIR), "properties"),  # source checkout / editable install
    ]
    for path in candidates:
        if _is_properties(path):
            return path
    raise ConfigError(
        "cannot find the recbole-ssr 'properties/' folder (searched: " + ", ".join(candidates)
        + f"). Reinstall the package (pip install --force-reinstall --no-deps recbole-ssr), or set {ENV_VAR} "
        "to a copy of the repository's properties/ folder."
    )


def resolve_shipped(path):
    """A path written as in the documentation, ``properties/search/SSR.yaml``: the file itself when it exists
    (relative to the working directory), else the same file of the shipped ``properties/`` folder, so documented
    commands work from any directory with an installed package. Any other path is returned unchanged."""
    if not path or os.path.exists(path) or os.path.isabs(path):
        return path
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) < 2 or parts[0] != "properties":
        return path
    try:
        shipped = os.path.join(properties_dir(), *parts[1:])
    except ConfigError:
        return path
    return shipped if os.path.exists(shipped) else path
