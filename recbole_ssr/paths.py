"""Where the package finds its yaml defaults (a bottom layer: imports nothing of ours but errors)."""

import os
import sys

from recbole_ssr.errors import ConfigError


def properties_dir():
    """The ``properties/`` folder: ``$RECBOLE_SSR_PROPERTIES``, else the one beside the package (source checkout /
    editable install), else ``<prefix>/share/recbole-ssr/properties``."""
    candidates = [
        os.environ.get("RECBOLE_SSR_PROPERTIES"),
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "properties"),
        os.path.join(sys.prefix, "share", "recbole-ssr", "properties"),
    ]
    for path in candidates:
        if path and os.path.isdir(path):
            return path
    raise ConfigError(
        "cannot find the recbole-ssr 'properties/' folder (searched: "
        + ", ".join(p for p in candidates if p) + "). Set RECBOLE_SSR_PROPERTIES to its path."
    )
