"""Configuration values written on a command line (``--key=value``) as Python values: used by the command line and
by the benchmark scripts that take ``--set key=value``."""

import ast

from recbole_ssr.core.errors import ConfigError


def parse_value(text):
    """``--key=value`` -> a Python value: numbers, lists, dicts, booleans, None; otherwise the string.

    Lists and mappings may be written as in Python (``['image']``) or as in the yaml files (``[image]``,
    ``{image: 0.1, text: 0.9}``)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", "~"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    stripped = text.strip()
    if stripped[:1] + stripped[-1:] in ("[]", "{}"):
        import yaml

        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            raise ConfigError(f"cannot parse '{text}' as a list or mapping: write e.g. [image, text] or "
                              "{image: 0.1, text: 0.9}.") from None
    return text
