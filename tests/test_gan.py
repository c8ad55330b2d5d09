"""GAN: each player descends its own loss when the other is held fixed, the three games train without NaNs, the
mode-collapse check fires on a collapsed generator and not on a healthy one, and the nets build for 28×28."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dgmbench.config import TrainConfig
from dgmbench.models import MODELS, get_model
from dgmbench.models.gan import mean_pairwise_distance
from conftest import small_info


def train_cfg(**over):
    return TrainConfig(**{**dataclasses.asdict(TrainConfig()), **MODELS.get("gan").train_defaults, **over})


def test_mean_pairwise_distance_closed_form():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])  # distances 5, 0, 5 over the 3 distinct pairs
    assert float(mean_pairwise_distance(x)) == pytest.approx(10.0 / 3.0)


@pytest.mark.parametrize("objective", ["nonsaturating", "hinge", "wgan-gp"])
def test_each_player_descends_its_loss(objective, digits):
    """Against a frozen opponent, a player's update is plain gradient descent, so its loss must fall."""
    torch.manual_seed(0)
    model = get_model("gan", digits.info, objective=objective)
    opt_g, opt_d = model.configure_optimizers(train_cfg(lr=1e-3))
    real = digits.train.x[:64]
    from dgmbench.distributions import to_symmetric

    y = to_symmetric(real, digits.info.num_levels)
    z = torch.randn(64, model.cfg.latent_dim)
    with torch.no_grad():
        fake = model.generator(z)

    def d_loss():
        return model.d_loss_fn(model.discriminator(y), model.discriminator(fake))

    start = float(d_loss().detach())
    for _ in range(20):
        opt_d.zero_grad()
        d_loss().backward()
        opt_d.step()
    assert float(d_loss().detach()) < start

    def g_loss():
        return model.g_loss_fn(model.discriminator(model.generator(z)))

    start = float(g_loss().detach())
    for _ in range(20):
        opt_g.zero_grad()
        g_loss().backward()
        opt_g.step()
    assert float(g_loss().detach()) < start


@pytest.mark.parametrize("objective,d_steps", [("nonsaturating", 1), ("hinge", 1), ("wgan-gp", 2)])
def test_train_step_logs(objective, d_steps, digits):
    torch.manual_seed(0)
    model = get_model("gan", digits.info, objective=objective, d_steps=d_steps)
    opts = model.configure_optimizers(train_cfg())
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    logs = model.train_step(digits.train.x[:32], opts, train_cfg())
    assert {"loss", "d_loss", "g_loss", "diversity_ratio"} <= set(logs)
    assert all(math.isfinite(v) for v in logs.values())
    moved = any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert moved == (d_steps == 1)  # with d_steps = 2 the first call updates only D


def test_mode_collapse_is_detected(digits):
    model = get_model("gan", digits.info)
    opts = model.configure_optimizers(train_cfg())
    # A collapsed generator: every z gives the same image (zero weights into the first feature map).
    with torch.no_grad():
        model.generator.fc[0].weight.zero_()
    logs = model.train_step(digits.train.x[:64], opts, train_cfg())
    assert logs["diversity_ratio"] < 0.05
    row = {"epoch": 10, **{f"train_{k}": v for k, v in logs.items()}}
    assert "mode collapse" in model.check_diverged(row)
    assert model.check_diverged({**row, "epoch": 1}) is None  # before collapse_after_epochs: not tested
    assert model.check_diverged({**row, "train_diversity_ratio": 0.9}) is None
    assert "non-finite" in model.check_diverged({**row, "train_diversity_ratio": 0.9, "train_g_loss": math.nan})


def test_samples_and_embedding(digits):
    torch.manual_seed(0)
    model = get_model("gan", digits.info).eval()
    s = model.sample(7)
    assert s.shape == (7, *digits.info.shape) and s.dtype == torch.long
    assert s.min() >= 0 and s.max() < digits.info.num_levels
    assert model.validation_score(digits.val.x[:4]) is None  # no early stopping
    assert model.embed(digits.test.x[:5]).shape == (5, model.discriminator.num_features)


def test_builds_for_28x28():
    info = small_info(shape=(1, 28, 28), num_levels=256)
    model = get_model("gan", info, objective="hinge").eval()
    assert model.sample(3).shape == (3, 1, 28, 28)
    assert model.embed(torch.randint(0, 256, (2, 1, 28, 28))).shape[0] == 2
