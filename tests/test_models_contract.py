"""Every registered model is held to the contract in models/base.py, parametrised over the registry
(torchvision's test_models.py pattern): a new family is tested here for free."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dgmbench.models import MODELS, Likelihood, get_model

ALL = MODELS.names()


def build(name, info, **over):
    return get_model(name, info, **over)


@pytest.mark.parametrize("name", ALL)
def test_declarations(name):
    cls = MODELS.get(name)
    assert isinstance(cls.likelihood, Likelihood)
    assert cls.family and cls.description, "families declare a table label and a one-line description"
    assert dataclasses.is_dataclass(cls.Config)
    if cls.likelihood is not Likelihood.NONE:
        assert cls.estimator != "none"
    if not cls.can_embed:
        assert cls.embed_note, "a family that cannot embed says why"


@pytest.mark.parametrize("name", ALL)
def test_unknown_hparam_lists_valid_keys(name, digits):
    from dgmbench.config import ConfigError

    with pytest.raises(ConfigError, match="valid keys"):
        build(name, digits.info, not_a_field=1)


@pytest.mark.parametrize("name", ALL)
def test_loss_goes_down_on_digits(name, digits):
    """A few steps on one fixed batch of real data must lower the training objective."""
    from dgmbench.config import TrainConfig

    if MODELS.get(name).closed_form:
        pytest.skip("fitted in closed form; its own tests compare it with the reference solution")
    torch.manual_seed(0)
    model = build(name, digits.info)
    tc = TrainConfig(**{**dataclasses.asdict(TrainConfig()), **MODELS.get(name).train_defaults})
    opts = model.configure_optimizers(tc)
    x = digits.train.x[:128]
    model.train()
    first = [model.train_step(x, opts, tc)["loss"] for _ in range(3)]
    for _ in range(40):
        last = model.train_step(x, opts, tc)["loss"]
    assert torch.isfinite(torch.tensor(last))
    assert last < sum(first) / len(first), f"{name}: loss {first} → {last} did not go down"


@pytest.mark.parametrize("name", ALL)
def test_public_contract(name, digits):
    torch.manual_seed(0)
    model = build(name, digits.info).eval()
    x = digits.test.x[:16]
    with torch.no_grad():
        if model.likelihood is Likelihood.NONE:
            with pytest.raises(TypeError):
                model.log_prob(x)
        else:
            lp = model.log_prob(x)
            assert lp.shape == (16,) and torch.isfinite(lp).all()
            # a probability of a discrete image is at most 1
            assert (lp <= 1e-4).all(), f"{name}: log p > 0 on discrete data"
        if model.can_sample:
            s = model.sample(5)
            assert s.shape == (5, *digits.info.shape)
            assert s.dtype == torch.long and s.min() >= 0 and s.max() < digits.info.num_levels
        else:
            with pytest.raises(TypeError):
                model.sample(1)
        if model.can_embed:
            z = model.embed(x)
            assert z.dim() == 2 and z.shape[0] == 16 and torch.isfinite(z).all()
        with pytest.raises(ValueError):
            model.log_prob(x.float()) if model.likelihood is not Likelihood.NONE else model.check_input(x.float())


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name, digits):
    """A rebuilt model loaded from a state_dict computes the same log-likelihood / embedding."""
    torch.manual_seed(0)
    a = build(name, digits.info).eval()
    b = build(name, digits.info).eval()
    b.load_state_dict(a.state_dict())
    x = digits.test.x[:8]
    with torch.no_grad():
        if a.likelihood is not Likelihood.NONE:
            torch.manual_seed(1)
            la = a.log_prob(x)
            torch.manual_seed(1)
            lb = b.log_prob(x)
            torch.testing.assert_close(la, lb)
        if a.can_embed:
            torch.testing.assert_close(a.embed(x), b.embed(x))
