"""Adam, as ``torch.optim.Adam`` computes it, without the cost of ``torch.optim.Optimizer`` in a short process.

Every method of ``torch.optim.Optimizer`` (``__init__`` through ``add_param_group``, ``step``, ``zero_grad``,
``state_dict``) imports ``torch._dynamo`` on first use, to fence itself off from ``torch.compile``: ~1.2 s of a
train job's start-up on a 2-core machine, paid by every job of a grid whose training loops last seconds
(``benchmarks/startup.py``). :class:`Adam` keeps the optimizer's state itself and calls torch's own Adam update,
``torch.optim.adam.adam`` (the function ``torch.optim.Adam.step`` calls, with the same arguments), so the update is
torch's, bit for bit (tests/test_optim.py steps both side by side), and only the bookkeeping is ours:

* param groups and defaults as torch keeps them (``lr``, ``betas``, ``eps``, ``weight_decay`` and torch's flags);
* ``state_dict()`` in torch's format, so a checkpoint saved by either class loads into the other;
* ``zero_grad(set_to_none=True)`` and ``step()``.

A model of a plugin may still return any ``torch.optim`` optimizer from ``configure_optimizers``: the trainer
uses only these four methods.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Protocol

import torch
from torch.optim.adam import adam as adam_update  # torch's update; importing it imports no dynamo

# What a torch.optim.Adam param group holds besides "params", with torch's defaults.
DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False,
    "foreach": None, "capturable": False, "differentiable": False, "fused": None, "decoupled_weight_decay": False,
}


class Optimizer(Protocol):
    """What the trainer asks of an optimizer (``configure_optimizers``' items): this module's :class:`Adam` and every
    ``torch.optim`` optimizer have it."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...
    def step(self) -> Any: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "fused", "decoupled_weight_decay")


class Adam:
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)`` without ``torch.optim.Optimizer``'s import of
    ``torch._dynamo``. ``params``: tensors, or dicts of param groups (``{"params": ..., "lr": ...}``) as for torch.
    torch's other flags (amsgrad, fused, ...) are refused here rather than half supported: use
    ``torch.optim.Adam`` for those."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.defaults = {**DEFAULTS, "lr": lr, "betas": (float(betas[0]), float(betas[1])), "eps": eps,
                         "weight_decay": weight_decay}
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError("Adam got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        group = {**self.defaults, **group, "params": params}
        if not 0.0 <= group["lr"]:
            raise ValueError(f"Adam: learning rate {group['lr']} is negative")
        if not (0.0 <= group["betas"][0] < 1.0 and 0.0 <= group["betas"][1] < 1.0):
            raise ValueError(f"Adam: betas {group['betas']} must lie in [0, 1)")
        if not (0.0 <= group["eps"] and 0.0 <= group["weight_decay"]):
            raise ValueError(f"Adam: eps {group['eps']} and weight_decay {group['weight_decay']} must be ≥ 0")
        if any(group[flag] for flag in FLAGS):
            raise ValueError(f"dgmbench.optim.Adam does not do {[f for f in FLAGS if group[f]]}: use torch.optim.Adam")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("Adam: a parameter appears in more than one param group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient (torch's lazy state, torch's kernel)."""
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adam does not support sparse gradients")
                state = self.state.setdefault(p, {})
                if not state:  # as torch.optim.Adam: step a float32 CPU scalar, moments like the parameter
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            adam_update(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=group["foreach"],
                        capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
                        has_complex=any(torch.is_complex(p) for p in params), decoupled_weight_decay=False,
                        amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                        eps=group["eps"], maximize=False)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's format: parameters numbered in group order; state keyed by those numbers."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": [index[id(p)] for p in group["params"]]})
        return {"state": {index[id(p)]: s for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by this class or by ``torch.optim.Adam`` (same groups, same parameter shapes)."""
        saved = copy.deepcopy(state_dict)
        saved_groups = saved["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(saved_groups)} param groups, this model "
                             f"{len(self.param_groups)}")
        if any(len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, self.param_groups)):
            raise ValueError("optimizer state's param groups do not match this model's parameters in size")
        params = {i: p for s, g in zip(saved_groups, self.param_groups) for i, p in zip(s["params"], g["params"])}
        state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        for key, values in saved["state"].items():
            p = params[key]
            state[p] = {k: (v if k == "step" else v.to(dtype=p.dtype, device=p.device)) if torch.is_tensor(v) else v
                        for k, v in values.items()}
            if not torch.is_tensor(state[p]["step"]):  # very old torch checkpoints kept the step as a number
                state[p]["step"] = torch.tensor(float(state[p]["step"]), dtype=torch.float32)
        self.state = state
        groups = []
        for s, g in zip(saved_groups, self.param_groups):
            loaded = {**DEFAULTS, **{k: v for k, v in s.items() if k != "params"}, "params": g["params"]}
            loaded["betas"] = tuple(loaded["betas"])
            if any(loaded[flag] for flag in FLAGS):
                raise ValueError(f"optimizer state uses {[f for f in FLAGS if loaded[f]]}, which dgmbench.optim.Adam "
                                 "does not do")
            groups.append(loaded)
        self.param_groups = groups
