"""``check_model``: one definition of "follows the dgmbench contract", for in-tree and third-party families alike.

As scikit-learn's ``check_estimator`` does for estimators, :func:`check_model` runs every contract check that a
model class's declarations make applicable (models/base.py) and raises :class:`ContractError` naming the first
broken property. The in-tree test suite (tests/test_models_contract.py) runs it on every registered model, so a
plugin that passes it is held to exactly what the built-in families are held to::

    from dgmbench.data import dataset_info
    from dgmbench.testing import check_model
    check_model(MyModel, dataset_info("digits"))

The checks, by name (``CHECKS``; :func:`applicable_checks` says which apply to a class):

==================================  ====================================================================
declarations                        labels, estimator, Config; autoregressive/discrete_latent ⇒ exact
capabilities_have_methods           every declared capability has its method (not the base class's stub)
log_prob_is_a_log_probability       (B,) finite, ≤ 0 on discrete data; float input refused; none ⇒ TypeError
samples_have_shape_and_levels       (N, C, H, W) int64 in 0..L-1; can_sample = False ⇒ TypeError
embedding_has_shape                 (B, F) finite features
autoregressive_is_causal            the logits of position d do not change when positions ≥ d change
autoregressive_chain_rule           log p(x) = Σ_d log softmax(conditional_logits)_d[x_d] (what ANS codes)
discrete_latent_is_a_bijection      to_latent is a permutation of the tiny space; from_latent inverts it;
                                    the latent groups partition the image and each group's pmf reads only
                                    earlier groups; Σ_groups log pmf = log p(x)
normalises_fresh / _trained         Σ_x p(x) = 1 (exact) or ≤ 1 (bound) over every image of a tiny space,
                                    for a fresh model and after a few training steps
loss_goes_down                      a few steps on one fixed batch lower the training objective
same_seed_same_result               same seed ⇒ same weights, likelihood, samples and training steps
state_dict_round_trip               a model rebuilt from a state_dict computes the same numbers
==================================  ====================================================================

Checks that need exhaustive sums use a tiny enumerable space (the ``normalisation`` evaluator's spaces, 81 images
for 3 levels on 1×2×2), summed with :func:`dgmbench.metrics.normalisation.total_probability`; the others run on
``dataset_info``'s own shape with ``data`` (real images, if given) or a synthetic batch of a few noisy prototypes.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from .data import DatasetInfo
from .models.base import GenerativeModel, Likelihood


class ContractError(AssertionError):
    """A model breaks the contract; ``str()`` names the model, the broken property and what was seen."""


@dataclass
class _Subject:
    """What every check receives: the class under test, its settings, a dataset shape and a batch of images."""

    cls: type[GenerativeModel]
    cfg: object  # an instance of cls.Config
    info: DatasetInfo
    data: torch.Tensor  # (N, C, H, W) int64 levels of info's shape
    seed: int

    def build(self, info: DatasetInfo | None = None, seed: int | None = None) -> GenerativeModel:
        torch.manual_seed(self.seed if seed is None else seed)
        return self.cls(self.cfg, info or self.info)

    def fail(self, check: str, message: str):
        raise ContractError(f"{self.cls.__name__} breaks the dgmbench contract: {check}: {message}")


# ---------------------------------------------------------------------------------------------- helpers
def synthetic_batch(info: DatasetInfo, num_images: int = 64, seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) int64 images with structure a model can learn: 4 random prototypes, 10 % of values redrawn."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randint(info.num_levels, (4, *info.shape), generator=g)
    x = protos[torch.randint(4, (num_images,), generator=g)]
    noise = torch.rand(x.shape, generator=g) < 0.1
    return torch.where(noise, torch.randint(info.num_levels, x.shape, generator=g), x)


def _train_config(cls):
    from .config import TrainConfig

    return TrainConfig(**{**dataclasses.asdict(TrainConfig()), **cls.train_defaults})


def _train(model: GenerativeModel, x: torch.Tensor, steps: int) -> list[float]:
    """``steps`` updates of ``model.train_step`` on the batch ``x``; returns the logged losses, model left in eval."""
    tc = _train_config(type(model))
    opts = model.configure_optimizers(tc)
    model.train()
    losses = [float(model.train_step(x, opts, tc)["loss"]) for _ in range(steps)]
    model.eval()
    return losses


def _jittered(model: GenerativeModel, scale: float = 0.3, seed: int = 1) -> GenerativeModel:
    """A copy with every parameter perturbed: a fresh model may start at a special point (zero output layer,
    identity couplings) where a leaky mask or a non-bijective coupling would go unseen."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return out.eval()


def tiny_space(s: _Subject) -> tuple[DatasetInfo, GenerativeModel] | None:
    """The first of the normalisation evaluator's enumerable spaces that the family can be built on."""
    from .metrics.normalisation import NormalisationConfig

    for C, H, W, L in NormalisationConfig().spaces:
        info = DatasetInfo(f"toy-{C}x{H}x{W}-{L}", (C, H, W), L, 1, "every image of a tiny space")
        try:
            return info, s.build(info).eval()
        except Exception:  # an architecture that cannot be built this small; the next space
            continue
    return None


# ---------------------------------------------------------------------------------------------- checks
def check_declarations(s: _Subject):
    cls = s.cls
    if not isinstance(cls.likelihood, Likelihood):
        s.fail("declarations", f"likelihood = {cls.likelihood!r} is not a dgmbench.models.Likelihood")
    if not (cls.family and cls.description):
        s.fail("declarations", "a family declares `family` (its table label) and `description` (one line)")
    if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
        s.fail("declarations", "`Config` must be a dataclass of hyperparameters")
    if cls.likelihood is not Likelihood.NONE and cls.estimator == "none":
        s.fail("declarations", f"likelihood = {cls.likelihood.value} but estimator = 'none'; say how log_prob is obtained")
    if not cls.can_embed and not cls.embed_note:
        s.fail("declarations", "can_embed = False needs an embed_note saying why")
    for flag in ("autoregressive", "discrete_latent"):
        if getattr(cls, flag) and cls.likelihood is not Likelihood.EXACT:
            s.fail("declarations", f"{flag} = True gives exact per-dimension probabilities: likelihood must be exact")
    if cls.supports_iwae and cls.likelihood is not Likelihood.BOUND:
        s.fail("declarations", "supports_iwae = True is for latent-variable bounds: likelihood must be bound")
    if cls.iwae_weights and not cls.supports_iwae:
        s.fail("declarations", "iwae_weights = True gives the terms of an importance-weighted bound: supports_iwae "
               "must be True")


# capability → the methods it promises (each must be the family's own, not GenerativeModel's stub)
CAPABILITY_METHODS: dict[str, tuple[str, ...]] = {
    "likelihood": ("_log_prob",),
    "can_sample": ("_sample",),
    "can_embed": ("_embed",),
    "autoregressive": ("conditional_logits", "sample_naive"),
    "supports_iwae": ("log_prob_iwae",),  # or, with iwae_weights, GenerativeModel's: the log-mean-exp of the weights
    "iwae_weights": ("iwae_log_weights",),
    "lossy": ("reconstruct", "latent_rate_nats"),
    "discrete_latent": ("to_latent", "from_latent", "latent_groups", "latent_log_pmf"),
}


def check_capabilities_have_methods(s: _Subject):
    for flag, methods in CAPABILITY_METHODS.items():
        declared = getattr(s.cls, flag)
        if flag == "likelihood":
            declared = declared is not Likelihood.NONE
        for m in methods if declared else ():
            if m == "log_prob_iwae" and s.cls.iwae_weights:
                continue  # derived from iwae_log_weights, which the iwae_weights entry requires
            if getattr(s.cls, m) is getattr(GenerativeModel, m):
                value = s.cls.likelihood.value if flag == "likelihood" else "True"
                s.fail("capabilities_have_methods", f"declares {flag} = {value} but does not implement {m}")
    if not s.cls.closed_form and s.cls.loss is GenerativeModel.loss and s.cls.train_step is GenerativeModel.train_step:
        s.fail("capabilities_have_methods", "implements neither loss() nor its own train_step()")


def check_log_prob(s: _Subject):
    model = s.build().eval()
    x = s.data[:16]
    with torch.no_grad():
        if s.cls.likelihood is Likelihood.NONE:
            try:
                model.log_prob(x)
            except TypeError:
                pass
            else:
                s.fail("log_prob_is_a_log_probability", "likelihood = none, yet log_prob() did not raise TypeError")
            try:
                model.check_input(x.float())
            except ValueError:
                return
            s.fail("log_prob_is_a_log_probability", "check_input accepted float input; it must refuse it")
        lp = model.log_prob(x)
        if lp.shape != (len(x),) or not torch.isfinite(lp).all():
            s.fail("log_prob_is_a_log_probability", f"log_prob gave shape {tuple(lp.shape)} (want ({len(x)},)) or non-finite values")
        if (lp > 1e-4).any():
            s.fail("log_prob_is_a_log_probability", f"log p(x) = {float(lp.max()):.4g} > 0: a probability of a discrete image exceeds 1")
        try:
            model.log_prob(x.float())
        except ValueError:
            return
        s.fail("log_prob_is_a_log_probability", "log_prob accepted float input; it must refuse it (check_input)")


def check_samples(s: _Subject):
    model = s.build().eval()
    C, H, W = s.info.shape
    if not s.cls.can_sample:
        try:
            model.sample(1)
        except TypeError:
            return
        s.fail("samples_have_shape_and_levels", "can_sample = False, yet sample() did not raise TypeError")
    x = model.sample(5)
    if x.shape != (5, C, H, W) or x.dtype != torch.long:
        s.fail("samples_have_shape_and_levels", f"sample(5) gave {x.dtype} {tuple(x.shape)}, want int64 (5, {C}, {H}, {W})")
    if x.min() < 0 or x.max() >= s.info.num_levels:
        s.fail("samples_have_shape_and_levels", f"sample values span {int(x.min())}..{int(x.max())}, outside 0..{s.info.num_levels - 1}")


def check_embedding(s: _Subject):
    model = s.build().eval()
    with torch.no_grad():
        z = model.embed(s.data[:16])
    if z.dim() != 2 or z.shape[0] != len(s.data[:16]) or not torch.isfinite(z).all():
        s.fail("embedding_has_shape", f"embed gave {tuple(z.shape)} (want (B, F)) or non-finite features")


def _normalises(s: _Subject, trained: bool):
    from .metrics.normalisation import total_probability
    from .tables.matrix import THRESHOLDS

    check = "normalises_trained" if trained else "normalises_fresh"
    built = tiny_space(s)
    if built is None:
        s.fail(check, "cannot be built on any tiny enumerable space (C×H×W/levels 1×2×2/3, 1×4×4/2) to sum p over")
    info, model = built
    if trained:
        _train(model, synthetic_batch(info, 32, s.seed), steps=10)
    bound = s.cls.likelihood is Likelihood.BOUND
    total = total_probability(model, bound_repeats=4 if bound else 1)["sum_p"]
    tol = THRESHOLDS.exact_tolerance  # the matrix's "exact" verdict uses the same tolerance
    state = "after 10 training steps" if trained else "for a fresh model"
    if bound and not total <= 1 + tol:
        s.fail(check, f"Σ exp(bound) = {total:.6f} > 1 over the {info.name} space {state}: not a lower bound")
    if not bound and not abs(total - 1) <= tol:
        s.fail(check, f"Σ p(x) = {total:.6f} ≠ 1 over the {info.name} space {state}: the pmf is not normalised")


def check_normalises_fresh(s: _Subject):
    _normalises(s, trained=False)


def check_normalises_trained(s: _Subject):
    _normalises(s, trained=True)


def check_causal(s: _Subject):
    """Redraw positions d..D-1 of a batch: the logits at d must not move (positions sampled if D > 256)."""
    from .metrics.compression import positions  # the coding order, the contract's order

    model = _jittered(s.build())
    order = positions(s.info.shape)
    picked = range(len(order)) if len(order) <= 256 else torch.linspace(0, len(order) - 1, 64).long().tolist()
    x = s.data[:4].long()
    g = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        base = model.conditional_logits(x)  # (B, L, C, H, W)
        for d in picked:
            later = torch.zeros(s.info.shape, dtype=torch.bool)
            for c, h, w in order[d:]:
                later[c, h, w] = True
            x2 = torch.where(later, torch.randint(s.info.num_levels, x.shape, generator=g), x)
            c, h, w = order[d]
            diff = float((model.conditional_logits(x2)[:, :, c, h, w] - base[:, :, c, h, w]).abs().max())
            if diff > 1e-4 * (1 + float(base[:, :, c, h, w].abs().max())):
                s.fail("autoregressive_is_causal", f"the logits of position {d} (c={c}, h={h}, w={w}) change by "
                       f"{diff:.3g} when only positions ≥ {d} change: the conditional sees the present or the future")


def check_chain_rule(s: _Subject):
    from .distributions import categorical_log_prob

    model = _jittered(s.build())
    x = s.data[:8].long()
    with torch.no_grad():
        logits = model.conditional_logits(x)
        if logits.shape != (len(x), s.info.num_levels, *s.info.shape):
            s.fail("autoregressive_chain_rule", f"conditional_logits gave {tuple(logits.shape)}, want (B, L, C, H, W)")
        gap = float((model.log_prob(x) - categorical_log_prob(logits, x)).abs().max())
    if gap > 1e-3:
        s.fail("autoregressive_chain_rule", f"log_prob differs from Σ_d log softmax(conditional_logits) by {gap:.3g} nats")


def check_bijection(s: _Subject):
    from .metrics.normalisation import enumerate_images

    name = "discrete_latent_is_a_bijection"
    built = tiny_space(s)
    if built is None:
        s.fail(name, "cannot be built on any tiny enumerable space to enumerate")
    info, model = built
    model = _jittered(model)
    with torch.no_grad():
        x = enumerate_images(info.shape, info.num_levels)
        z = model.to_latent(x)
        if z.shape != x.shape or z.min() < 0 or z.max() >= info.num_levels:
            s.fail(name, f"to_latent gave {tuple(z.shape)} with values {int(z.min())}..{int(z.max())}; want the image's shape and levels")
        distinct = len(torch.unique(z.flatten(1), dim=0))
        if distinct != len(x):
            s.fail(name, f"to_latent maps the {len(x)} images of {info.name} to {distinct} latents: not injective")
        if not torch.equal(model.from_latent(z), x):
            s.fail(name, "from_latent(to_latent(x)) ≠ x")
        groups = torch.stack([gr.bool() for gr in model.latent_groups]).long()
        if not torch.equal(groups.sum(0), torch.ones(info.shape, dtype=torch.long)):
            s.fail(name, "latent_groups do not partition the positions (each must be in exactly one group)")
        total = torch.zeros(len(x), dtype=torch.float64)
        g = torch.Generator().manual_seed(s.seed)
        for k, group in enumerate(model.latent_groups):
            pmf = model.latent_log_pmf(z, k)  # (B, L, C, H, W)
            later = groups[k:].sum(0).bool()
            z2 = torch.where(later, torch.randint(info.num_levels, z.shape, generator=g), z)
            if (model.latent_log_pmf(z2, k) - pmf)[:, :, group.bool()].abs().max() > 1e-4:
                s.fail(name, f"latent_log_pmf of group {k} changes when only groups ≥ {k} change: not causal")
            total += pmf.gather(1, z[:, None]).squeeze(1)[:, group.bool()].double().sum(1)
        gap = float((total - model.log_prob(x).double()).abs().max())
        if gap > 1e-3:
            s.fail(name, f"Σ_groups log P(z_group | earlier) differs from log_prob by {gap:.3g} nats")


def check_loss_goes_down(s: _Subject):
    model = s.build()
    losses = _train(model, s.data[:128], steps=43)
    first, last = losses[:3], losses[-1]
    if not torch.isfinite(torch.tensor(last)) or not last < sum(first) / len(first):
        s.fail("loss_goes_down", f"40 steps on one fixed batch took the loss from {first} to {last}: it did not go down")


def _outputs(model: GenerativeModel, x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """Everything a model computes from ``x``, each under the same torch seed."""
    out = {}
    with torch.no_grad():
        for name, fn in (("log_prob", model.log_prob if model.likelihood is not Likelihood.NONE else None),
                         ("sample", (lambda _: model.sample(4)) if model.can_sample else None),
                         ("embed", model.embed if model.can_embed else None)):
            if fn is not None:
                torch.manual_seed(seed)
                out[name] = fn(x)
    return out


def check_same_seed(s: _Subject):
    name = "same_seed_same_result"
    a, b = s.build(), s.build()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        if not torch.equal(va, vb):
            s.fail(name, f"two models built after the same torch seed differ in {k}")
    x = s.data[:8]
    out_b = _outputs(b.eval(), x, 1)
    for key, va in _outputs(a.eval(), x, 1).items():
        if not torch.equal(va, out_b[key]):
            s.fail(name, f"{key} differs between two identical models under the same seed")
    if not s.cls.closed_form:
        torch.manual_seed(2)
        la = _train(a, s.data[:32], steps=3)
        torch.manual_seed(2)
        lb = _train(b, s.data[:32], steps=3)
        if la != lb:
            s.fail(name, f"three training steps from the same seed gave losses {la} and {lb}")


def check_state_dict_round_trip(s: _Subject):
    a = s.build(seed=s.seed).eval()
    b = s.build(seed=s.seed + 1).eval()
    b.load_state_dict(a.state_dict())
    out_b = _outputs(b, s.data[:8], 1)
    for key, va in _outputs(a, s.data[:8], 1).items():
        if not torch.allclose(va.double(), out_b[key].double()):
            s.fail("state_dict_round_trip", f"{key} differs after load_state_dict: state lives outside the state_dict")


@dataclass(frozen=True)
class Check:
    name: str
    fn: Callable[[_Subject], None]
    applies: Callable[[type[GenerativeModel]], bool] = lambda cls: True


def _has_likelihood(cls) -> bool:
    return cls.likelihood is not Likelihood.NONE


CHECKS: list[Check] = [
    Check("declarations", check_declarations),
    Check("capabilities_have_methods", check_capabilities_have_methods),
    Check("log_prob_is_a_log_probability", check_log_prob),
    Check("samples_have_shape_and_levels", check_samples),
    Check("embedding_has_shape", check_embedding, lambda cls: cls.can_embed),
    Check("autoregressive_is_causal", check_causal, lambda cls: cls.autoregressive),
    Check("autoregressive_chain_rule", check_chain_rule, lambda cls: cls.autoregressive),
    Check("discrete_latent_is_a_bijection", check_bijection, lambda cls: cls.discrete_latent),
    Check("normalises_fresh", check_normalises_fresh, _has_likelihood),
    Check("normalises_trained", check_normalises_trained, lambda cls: _has_likelihood(cls) and not cls.closed_form),
    Check("loss_goes_down", check_loss_goes_down, lambda cls: not cls.closed_form),
    Check("same_seed_same_result", check_same_seed),
    Check("state_dict_round_trip", check_state_dict_round_trip),
]
# In the order they run: class attributes first, then structure (causality, bijection) before the sums it causes
# (a leaky mask also breaks Σp = 1; the report names the mask).
CHECK_NAMES = [c.name for c in CHECKS]


def applicable_checks(model_cls: type[GenerativeModel]) -> list[str]:
    """Names of the checks ``model_cls``'s declarations make applicable, in the order they run."""
    return [c.name for c in CHECKS if c.applies(model_cls)]


def check_model(model_cls: type[GenerativeModel], dataset_info: DatasetInfo, *, hparams: dict | None = None,
                data: torch.Tensor | None = None, checks: list[str] | None = None, seed: int = 0) -> list[str]:
    """Certify that ``model_cls`` follows the dgmbench model contract.

    Args:
        model_cls: a :class:`~dgmbench.models.GenerativeModel` subclass (registered or not).
        dataset_info: the shape and levels to build it for (e.g. ``dataset_info("digits")``); the likelihood-sum
            and bijection checks also build it on tiny enumerable spaces.
        hparams: overrides of ``model_cls.Config``'s defaults.
        data: (N, C, H, W) integer images of ``dataset_info`` for the data-driven checks (N ≥ 16; 128 are used by
            ``loss_goes_down``); default: a synthetic batch of noisy prototypes.
        checks: run only these (names from :data:`CHECK_NAMES`); default: every applicable one.
        seed: torch seed of every model built.
    Returns:
        The names of the checks that ran (all passed).
    Raises:
        ContractError: naming the model and the first broken property.
    """
    unknown = sorted(set(checks or []) - set(CHECK_NAMES))
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; valid checks: {', '.join(CHECK_NAMES)}")
    cls_name = getattr(model_cls, "__name__", repr(model_cls))
    if not (isinstance(model_cls, type) and issubclass(model_cls, GenerativeModel)):
        raise ContractError(f"{cls_name} breaks the dgmbench contract: it is not a GenerativeModel subclass")
    x = (data if data is not None else synthetic_batch(dataset_info, 128, seed)).long()
    if tuple(x.shape[1:]) != dataset_info.shape:
        raise ValueError(f"data has images of shape {tuple(x.shape[1:])}, dataset_info says {dataset_info.shape}")
    from .config import ConfigError, build_dataclass

    subject = _Subject(model_cls, None, dataset_info, x, seed)
    check_declarations(subject)  # Config must be a dataclass before it can be built
    try:
        subject.cfg = build_dataclass(model_cls.Config, hparams, where=f"hparams.{model_cls.name or cls_name}")
    except ConfigError as err:
        subject.fail("declarations", f"Config(**hparams) is invalid: {err}")
    ran = []
    for c in CHECKS:
        if (checks is None or c.name in checks) and c.applies(model_cls):
            c.fn(subject)
            ran.append(c.name)
    return ran
