"""hear-models: audio representation models behind the HEAR 2021 API.

Nothing heavy happens at import: models, weights and optional dependencies load only
when asked for.
"""

__version__ = "0.1.0"

from .registry import create_model, list_models  # noqa: E402

__all__ = ["create_model", "list_models", "__version__"]
