"""check_model certifies a correct model written outside the registry, and fails on deliberately broken ones with
a message naming the broken property: a leaky autoregressive mask, a pmf that does not sum to one, a declared
capability without its method."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import small_info
from dgmbench.distributions import categorical_log_prob, to_symmetric
from dgmbench.models import GenerativeModel, Likelihood
from dgmbench.testing import CHECK_NAMES, ContractError, check_model


@dataclass
class TinyConfig:
    diagonal: int = -1  # the mask keeps W[d, e] for e ≤ d + diagonal: -1 is strictly causal, 0 leaks x_d itself


class FullyVisibleARM(GenerativeModel):
    """The smallest autoregressive model: logits_d = b_d + Σ_{e<d} W_de x_e (a fully visible sigmoid belief net
    with L levels; Frey 1998), positions in the contract's order (h, w, c)."""

    family = "autoregressive (test)"
    description = "fully visible linear ARM (test model)"
    Config = TinyConfig
    likelihood = Likelihood.EXACT
    estimator = "exact"
    autoregressive = True
    can_sample = True
    embed_note = "test model"

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        D, L = info.num_dims, info.num_levels
        self.linear = nn.Linear(D, D * L)
        mask = torch.tril(torch.ones(D, D), diagonal=cfg.diagonal).repeat_interleave(L, dim=0)  # (D·L, D)
        self.register_buffer("mask", mask, persistent=False)

    def conditional_logits(self, x):
        x = self.check_input(x)
        B, (C, H, W), L = len(x), self.info.shape, self.info.num_levels
        flat = to_symmetric(x, L).permute(0, 2, 3, 1).reshape(B, -1)  # (B, D), order (h, w, c)
        out = nn.functional.linear(flat, self.linear.weight * self.mask, self.linear.bias)
        return out.view(B, H, W, C, L).permute(0, 4, 3, 1, 2)  # (B, L, C, H, W)

    def _log_prob(self, x):
        return categorical_log_prob(self.conditional_logits(x), x)

    def loss(self, x):
        return -self.log_prob(x).mean(), {}

    def _sample(self, n):
        x = torch.zeros(n, *self.info.shape, dtype=torch.long)
        C, H, W = self.info.shape
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    p = self.conditional_logits(x)[:, :, c, h, w].softmax(-1)
                    x[:, c, h, w] = torch.multinomial(p, 1)[:, 0]
        return x

    def sample_naive(self, n):
        return self.sample(n)


class LeakyMask(FullyVisibleARM):
    def __init__(self, cfg, info):
        super().__init__(TinyConfig(diagonal=0), info)  # position d also reads x_d: a leaky mask


class UnnormalisedPmf(GenerativeModel):
    """Independent pixels whose log-softmax runs over the wrong axis (positions instead of levels)."""

    family = "test"
    description = "factorised categorical with a normalisation bug (test model)"
    Config = TinyConfig
    likelihood = Likelihood.EXACT
    estimator = "exact"
    embed_note = "test model"

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.logits = nn.Parameter(torch.randn(info.num_levels, *info.shape))  # (L, C, H, W)

    def _log_prob(self, x):
        log_p = self.logits.flatten(1).log_softmax(1).view_as(self.logits)  # bug: should be dim 0 (the levels)
        return log_p.expand(len(x), *log_p.shape).gather(1, x[:, None]).flatten(1).sum(1)  # Σ_d log p_d(x_d)

    def loss(self, x):
        return -self.log_prob(x).mean(), {}


class SamplesWithoutSampler(FullyVisibleARM):
    can_sample = True
    _sample = GenerativeModel._sample  # declared, not implemented


INFO = small_info((1, 3, 3), 3)


def test_a_correct_model_outside_the_registry_passes_every_applicable_check():
    ran = check_model(FullyVisibleARM, INFO)  # no data: the synthetic batch of noisy prototypes
    assert ran == [c for c in CHECK_NAMES if c not in ("embedding_has_shape", "discrete_latent_is_a_bijection")]


@pytest.mark.parametrize("model, prop", [
    (LeakyMask, "autoregressive_is_causal"),
    (UnnormalisedPmf, "normalises_fresh"),
    (SamplesWithoutSampler, "capabilities_have_methods"),
])
def test_a_broken_model_fails_naming_the_broken_property(model, prop):
    with pytest.raises(ContractError, match=prop) as err:
        check_model(model, INFO)
    assert model.__name__ in str(err.value)
    if model is SamplesWithoutSampler:
        assert "can_sample = True but does not implement _sample" in str(err.value)


def test_an_importance_weighted_bound_needs_its_method_or_its_weights():
    """supports_iwae needs log_prob_iwae, or iwae_weights and iwae_log_weights (GenerativeModel derives the bound
    from the weights); a declaration with neither is named."""
    from dgmbench.models import MODELS

    vae = MODELS.get("vae")
    no_weights = type("VAEWithoutWeights", (vae,), {"iwae_weights": False})  # so no bound either
    stub_weights = type("VAEWithStubWeights", (vae,), {"iwae_log_weights": GenerativeModel.iwae_log_weights})
    with pytest.raises(ContractError, match="supports_iwae = True but does not implement log_prob_iwae"):
        check_model(no_weights, INFO, checks=["capabilities_have_methods"])
    with pytest.raises(ContractError, match="iwae_weights = True but does not implement iwae_log_weights"):
        check_model(stub_weights, INFO, checks=["capabilities_have_methods"])
    check_model(vae, INFO, checks=["capabilities_have_methods"])  # the bound derived from its own weights


def test_a_leaky_mask_is_named_with_its_position():
    with pytest.raises(ContractError, match=r"position 0 \(c=0, h=0, w=0\) change"):
        check_model(LeakyMask, INFO, checks=["autoregressive_is_causal"])


def test_unknown_check_and_non_model_are_refused():
    with pytest.raises(ValueError, match="valid checks: declarations"):
        check_model(FullyVisibleARM, INFO, checks=["not_a_check"])
    with pytest.raises(ContractError, match="not a GenerativeModel subclass"):
        check_model(nn.Linear, INFO)
