"""recbole-ssr: SSR (Structured Spectral Reasoning) and multimodal baselines as a RecBole 1.2.1 plugin."""

from recbole_ssr import compat

compat.apply()

__version__ = "0.1.0"
