"""dgmbench.optim.Adam against torch.optim.Adam, the reference: the same parameters after the same steps, bit for bit,
for every setting the families use (param groups with their own learning rates, betas, weight decay, a parameter
without a gradient); state dicts that load across the two classes mid-training; and the reason it exists — no family's
training step imports torch._dynamo."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dgmbench.optim import Adam

from conftest import REPO


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def groups(model: nn.Module, lr: float = 3e-3) -> list[dict]:
    """Two groups, the second with its own learning rate (as the discrete flow's couplings have)."""
    return [{"params": model[0].parameters()}, {"params": model[3].parameters(), "lr": lr / 7}]


def batches(n: int):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 1, 6, 6, generator=g), torch.randint(3, (16,), generator=g)) for _ in range(n)]


def train(model: nn.Module, opt, data, frozen: nn.Parameter | None = None) -> None:
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if frozen is not None:
            frozen.grad = None  # a parameter with no gradient this step: Adam must leave it and its state alone
        opt.step()


def assert_same(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


SETTINGS = [dict(lr=1e-2), dict(lr=3e-3, betas=(0.5, 0.999)), dict(lr=3e-3, weight_decay=1e-2)]


@pytest.mark.parametrize("kwargs", SETTINGS, ids=["default", "gan-betas", "weight-decay"])
@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "two-groups"])
def test_steps_equal_torch_adam_bit_for_bit(kwargs, grouped):
    ours, ref = net(), net()
    opt = Adam(groups(ours) if grouped else ours.parameters(), **kwargs)
    opt_ref = torch.optim.Adam(groups(ref) if grouped else ref.parameters(), **kwargs)
    data = batches(12)
    train(ours, opt, data, frozen=ours[0].bias)
    train(ref, opt_ref, data, frozen=ref[0].bias)
    assert_same(ours, ref)
    assert not torch.equal(ours[3].weight, net()[3].weight)  # it did train
    assert torch.equal(ours[0].bias, net()[0].bias) and ours[0].bias not in opt.state  # the frozen one did not


@pytest.mark.parametrize("first, second", [(Adam, torch.optim.Adam), (torch.optim.Adam, Adam)],
                         ids=["ours-to-torch", "torch-to-ours"])
def test_state_dict_loads_across_classes_mid_training(first, second, tmp_path):
    """A checkpoint saved by one class, through torch.save, resumes in the other exactly as in an unbroken run."""
    data = batches(10)
    whole = net()
    opt = torch.optim.Adam(groups(whole), lr=1e-2)
    train(whole, opt, data)

    a = net()
    opt_a = first(groups(a), lr=1e-2)
    train(a, opt_a, data[:4])
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # how the trainer loads checkpoints
    b = net(seed=5)  # other weights: all of them must come from the checkpoint
    b.load_state_dict(saved["model"])
    opt_b = second(groups(b), lr=0.5)  # another lr too: the saved groups' hyperparameters win, as in torch
    opt_b.load_state_dict(saved["opt"])
    train(b, opt_b, data[4:])
    assert_same(b, whole)


def test_refuses_what_it_does_not_do():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="torch.optim.Adam"):
        Adam([{"params": [p], "amsgrad": True}])
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="more than one param group"):
        Adam([{"params": [p]}, {"params": [p]}])
    opt = Adam([p])
    with pytest.raises(ValueError, match="param groups"):
        opt.load_state_dict(Adam([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))]}]).state_dict())
    with pytest.raises(ValueError, match="amsgrad"):
        opt.load_state_dict(torch.optim.Adam([nn.Parameter(torch.zeros(2))], amsgrad=True).state_dict())


NO_DYNAMO = """
import sys
import torch
from dgmbench.config import TrainConfig
from dgmbench.data import load_dataset
from dgmbench.models import MODELS, get_model
torch.manual_seed(0)
ds = load_dataset("digits")
x = ds.train.x[:32]
cfg = TrainConfig()
for name in MODELS.names():
    model = get_model(name, ds.info)
    optimizers = model.configure_optimizers(cfg)
    model.train()
    model.train_step(x, optimizers, cfg)
    [o.load_state_dict(o.state_dict()) for o in optimizers]
    assert "torch._dynamo" not in sys.modules, name
print(len(MODELS.names()))
"""


def test_no_family_training_step_imports_dynamo():
    """What the class is for: torch.optim's methods import torch._dynamo (~1.2 s of every train job); a training step
    of every registered family, with its optimizers' state saved and loaded, must not. Fails if any family goes back
    to torch.optim (tested by doing so: the VAE with torch.optim.Adam fails here)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", NO_DYNAMO], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) >= 11
