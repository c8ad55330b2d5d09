"""Model families, one file each, registered by name (``dgmbench list`` shows them).

Importing this package imports no torch: each in-tree family is *declared* here by name, module and the two facts
``dgmbench list`` shows, and its module (which runs ``@register_model``) is imported on the first
``MODELS.get(name)``. tests/test_startup.py checks these declarations against the classes. ``GenerativeModel``,
``Likelihood``, ``get_model``, ``list_models`` and ``register_model`` come from ``base`` on first use.
"""

from ..registry import Registry


def _describe(cls) -> dict:
    """What a model class declares that `dgmbench list` shows."""
    return {"likelihood": cls.likelihood.value, "description": cls.description}


MODELS: Registry[type] = Registry("model", describe=_describe)

# name: (module under dgmbench.models, likelihood, description) — copies of each class's declarations.
_BUILTIN = {
    "arm": ("arm", "exact", "ARM: gated PixelCNN (vertical/horizontal stacks, no blind spot), categorical over the levels"),
    "dae": ("dae", "none", "Denoising auto-encoder: conv encoder, Gaussian / masking / mask-as-input corruption"),
    "diffusion": ("diffusion", "bound", "DDPM with a categorical x₀ posterior and mixture reverse steps, cosine "
                  "schedule; exact-over-t VLB and IW-VLB; DDIM-strided sampler"),
    "flow": ("flow", "bound", "Flow: RealNVP couplings + Glow actnorm/1×1 conv; uniform or variational dequantisation bound"),
    "gan": ("gan", "none", "DCGAN: conv generator/discriminator; nonsaturating, hinge+SN or WGAN-GP game; no likelihood"),
    "hvae": ("hvae", "bound", "HVAE: two Gaussian latent layers, ladder inference sharing the top-down path; ELBO, IWAE-k eval"),
    "idf": ("discrete_flow", "exact", "Discrete flow: modular integer couplings (Tran et al.; IDF), multiscale "
            "factor-out prior; exact, ANS-coded"),
    "masked": ("masked", "none", "Masked modelling: hide random patches, predict their levels from the rest (conv encoder)"),
    "pca": ("pca", "none", "PCA: the optimal linear auto-encoder, closed form from moments streamed over one epoch"),
    "simclr": ("simclr", "none", "SimCLR: conv encoder + projection head, NT-Xent on two augmented views"),
    "vae": ("vae", "bound", "VAE: MLP Gaussian encoder, categorical decoder over the levels; ELBO training, IWAE-k eval"),
}
for _name, (_module, _likelihood, _description) in _BUILTIN.items():
    MODELS.declare(_name, f"{__name__}.{_module}", likelihood=_likelihood, description=_description)

# Other packages add families through the entry-point group "dgmbench.models" (registry.py); they are loaded on
# the first lookup, after every in-tree family is declared, so a plugin can never shadow one.
MODELS.use_entry_points("dgmbench.models")

_FROM_BASE = ("GenerativeModel", "Likelihood", "get_model", "list_models", "register_model")


def __getattr__(name: str):  # PEP 562: the torch-importing names load base.py only when asked for
    if name in _FROM_BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", *_FROM_BASE]
