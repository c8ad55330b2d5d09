"""Model families, one file each, registered by name (``dgmbench list`` shows them)."""

from .base import MODELS, GenerativeModel, Likelihood, get_model, list_models, register_model

# Importing a family's module registers it.
from . import vae  # noqa: E402,F401
from . import arm, discrete_flow, flow  # noqa: E402,F401
from . import dae, masked, pca, simclr  # noqa: E402,F401  (self-supervised encoders)
from . import gan  # noqa: E402,F401
from . import diffusion  # noqa: E402,F401
from . import hvae  # noqa: E402,F401

# Other packages add families through the entry-point group "dgmbench.models" (registry.py); they are loaded on
# the first lookup, after every in-tree family is registered, so a plugin can never shadow one.
MODELS.use_entry_points("dgmbench.models")

__all__ = ["MODELS", "GenerativeModel", "Likelihood", "get_model", "list_models", "register_model"]
