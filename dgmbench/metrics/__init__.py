"""Evaluators: the contract every measurement follows (docs/design.md, "Evaluation").

An evaluator is one module's function ``fn(ctx, cfg) -> Result | None`` registered with
:func:`register_evaluator` under the section name it writes in ``metrics.json``, with

* ``Config``: a dataclass of its settings (``eval.<name>`` in a grid file);
* ``Result``: a :class:`Result` dataclass, every field with its unit in its comment, the estimator named,
  the standard error where the estimate is stochastic, and the number and identity of the images scored;
* ``requires``: the names of the evaluators whose results it reads (``ctx.result(name)``). The runner
  (:func:`plan`) orders the evaluators by these dependencies; nothing else couples them.

It returns ``None`` when it does not apply to the model (it reads the model's declared capabilities, e.g.
``model.likelihood`` or ``model.can_sample``, never ``hasattr``).

Every evaluator that scores test images scores the same ones: the context's fixed **test subset**
(:class:`TestSubset`, settings ``eval.test_subset``), chosen once per dataset and recorded in ``metrics.json``
with its size and a hash of its indices, so "coded vs NLL" or "OOD in-distribution" compare like with like.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..pending import write_json  # atomic (standard library only)
from ..registry import Registry


# -------------------------------------------------------------------------------------------------- results
class ResultError(ValueError):
    """A metrics.json section that does not parse as its evaluator's Result; ``str()`` says which and the fix."""


@dataclass
class Result:
    """Base of every evaluator's typed result: ``to_dict`` for metrics.json, ``from_dict`` back, checked."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, where: str | None = None):
        """Rebuild from the dict ``to_dict`` wrote; unknown or missing fields and wrong types raise ResultError."""
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise ResultError(f"{where} must be a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ResultError(f"{where} has unknown field {unknown[0]!r} (written by another dgmbench version?)")
        kwargs = {}
        for name, f in fields.items():
            if name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ResultError(f"{where} lacks field {name!r}")
                continue
            kwargs[name] = _parse(hints[name], data[name], f"{where}.{name}")
        return cls(**kwargs)


def _parse(tp: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as type ``tp``: Result subclasses, Optional/Union, list[X], dict[str, X], scalars."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Result):
        return tp.from_dict(value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(arg, value, where)
            except ResultError as err:
                errors.append(str(err))
        raise ResultError(errors[0] if errors else f"{where} = {value!r} has the wrong type")
    if origin is list:
        if not isinstance(value, list):
            raise ResultError(f"{where} must be a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_parse(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ResultError(f"{where} must be a mapping, got {type(value).__name__}")
        args = typing.get_args(tp)
        item = args[1] if args else Any
        return {k: _parse(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ResultError(f"{where} = {value!r} must be a number")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ResultError(f"{where} = {value!r} must be an integer")
    if tp in (bool, str):
        if isinstance(value, tp):
            return value
        raise ResultError(f"{where} = {value!r} must be a {tp.__name__}")
    return value


# ---------------------------------------------------------------------------------------------- test subset
@dataclass
class TestSubsetConfig:
    """The fixed test images every evaluator scores (``eval.test_subset``)."""

    max_images: int = 0  # a fixed random subset of n test images, the same for every model and seed; 0 = all
    seed: int = 0  # seed of that subset (independent of the run's seed)

    def validate(self):
        if self.max_images < 0:
            raise ValueError(f"max_images must be ≥ 0 (0 = the whole test split), got {self.max_images}")


# Settings of the evaluation as a whole, beside the evaluators' own (eval.<name> in a grid file).
EVAL_SETTINGS: dict[str, type] = {"test_subset": TestSubsetConfig}


def fixed_rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator for one purpose ("test-subset", "noise", "mnist5k", ...), independent of the others."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def subsample(x: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """At most ``n`` rows of ``x``, a uniform random subset without replacement (all of them if len ≤ n)."""
    if len(x) <= n:
        return x
    return x[torch.from_numpy(np.sort(rng.choice(len(x), size=n, replace=False)))]


def cached_json(cache_dir: str, kind: str, key: str, compute: Callable[[], Any], *,
                to_json: Callable[[Any], Any] = lambda v: v, from_json: Callable[[Any], Any] = lambda d: d) -> Any:
    """``compute()``, kept as JSON in ``<cache_dir>/<kind>/<key>.json`` (``cache_dir`` "" = no cache), for work that
    depends on the data and settings only, not on the model (the caller's ``key`` hashes exactly those). An entry
    that does not read back through ``from_json`` (damaged, or written by another version) is recomputed and
    replaced; the file is written atomically, so parallel jobs at worst compute it twice."""
    if not cache_dir:
        return compute()
    path = Path(cache_dir) / kind / f"{key}.json"
    if path.exists():
        try:
            return from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):  # JSONDecodeError and ResultError are ValueErrors
            pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(to_json(value), path)
    return value


def indices_hash(indices: np.ndarray) -> str:
    """First 16 hex digits of the SHA-1 of the int64 indices: names a set of images in a few characters."""
    return hashlib.sha1(np.ascontiguousarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass
class TestSubset(Result):
    """Which test images were scored: ``num_images`` of the ``num_split`` in the split, by their index hash."""

    __test__ = False  # not a pytest test class, despite its name

    num_images: int  # images scored
    num_split: int  # images in the test split
    indices_sha1: str  # hash of the sorted indices into the test split (indices_hash)
    seed: int  # seed of the subset (eval.test_subset.seed)

    @staticmethod
    def choose(num_split: int, cfg: TestSubsetConfig) -> tuple["TestSubset", np.ndarray]:
        if cfg.max_images and cfg.max_images < num_split:
            idx = np.sort(fixed_rng(cfg.seed, "test-subset").choice(num_split, size=cfg.max_images, replace=False))
        else:
            idx = np.arange(num_split)
        return TestSubset(len(idx), num_split, indices_hash(idx), cfg.seed), idx

    @property
    def label(self) -> str:
        """"447" for the whole split, "200 of 10000" for a subset."""
        return str(self.num_images) if self.num_images == self.num_split else f"{self.num_images} of {self.num_split}"


# ------------------------------------------------------------------------------------------------ evaluators
@dataclass
class EvalContext:
    model: Any  # GenerativeModel, in eval mode, on `device`
    dataset: Any  # dgmbench.data.Dataset
    run: Any  # dgmbench.config.RunConfig (training settings; evaluation settings are the cfg argument)
    device: torch.device
    run_dir: Path
    record: dict  # the checkpoint's training record (epochs, status, curve, ...)
    subset: TestSubset  # the fixed test images every evaluator scores
    test_x: torch.Tensor  # (N, C, H, W) those images, int64 levels
    results: dict[str, Result] = field(default_factory=dict)  # results computed (or reused) so far
    cache: dict[str, Any] = field(default_factory=dict)  # work shared by evaluators within one process

    def result(self, name: str) -> Result | None:
        """The result of evaluator ``name``, which the caller must list in its ``requires``."""
        return self.results.get(name)

    def test_log_prob(self, batch_size: int) -> torch.Tensor:
        """(N,) float64 ``model.log_prob`` of the test subset, computed once per process and shared (the likelihood,
        compression and OOD evaluators all score these images with the same one draw of a stochastic bound)."""
        if "test_log_prob" not in self.cache:
            self.cache["test_log_prob"] = batched(self.model.log_prob, self.test_x, batch_size, self.device)
        return self.cache["test_log_prob"]


def iwae_k_for(model, k: int, overrides: dict[str, int]) -> int:
    """The importance samples an evaluator gives ``model``: its entry in ``overrides`` (by model name: a family whose
    every sample costs many network passes, e.g. diffusion), else ``k``."""
    return overrides.get(getattr(model, "name", ""), k)


def check_iwae_k_overrides(overrides: dict[str, int]) -> None:
    """A config's ``iwae_k_overrides`` maps model names to k ≥ 1 (ValueError otherwise)."""
    if any(not isinstance(k, int) or k < 1 for k in overrides.values()):
        raise ValueError(f"iwae_k_overrides must map model names to k ≥ 1, got {overrides}")


@torch.no_grad()
def batched(fn, x: torch.Tensor, batch_size: int, device, dim: int = 0) -> torch.Tensor:
    """Apply ``fn`` to ``x`` in batches on ``device``; concatenate the results on the CPU in float64, along ``dim``
    (0 for (B,) results; 1 for (k, B) ones, e.g. importance weights)."""
    return torch.cat([fn(x[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)],
                     dim=dim)


@dataclass(frozen=True)
class Evaluator:
    name: str
    fn: Callable[[EvalContext, Any], Result | None]
    Config: type
    Result: type
    requires: tuple[str, ...] = ()


EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def register_evaluator(name: str, *, result: type, config: type | None = None, requires: tuple[str, ...] = ()):
    """Register ``fn(ctx, cfg) -> result | None`` as the evaluator writing section ``name``."""
    if not (isinstance(result, type) and issubclass(result, Result)):
        raise TypeError(f"evaluator {name!r}: result must be a Result dataclass, got {result!r}")

    def decorator(fn):
        cfg_cls = config or dataclasses.make_dataclass(f"{name.title().replace('_', '')}Config", [])
        EVALUATORS.register(name)(Evaluator(name, fn, cfg_cls, result, tuple(requires)))
        return fn

    return decorator


def plan(names: list[str] | None = None) -> list[Evaluator]:
    """The evaluators ``names`` (all when None) and everything they require, dependencies first (stable by name).
    A dependency cycle or an unknown name raises."""
    wanted = list(EVALUATORS.names()) if names is None else list(names)
    order: list[Evaluator] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"evaluators require each other in a cycle: {' → '.join(path + (name,))}")
        state[name] = "visiting"
        ev = EVALUATORS.get(name)
        for dep in ev.requires:
            visit(dep, path + (name,))
        state[name] = "done"
        order.append(ev)

    for name in sorted(wanted):
        visit(name, ())
    return order


def parse_section(name: str, data: Any) -> Result:
    """A metrics.json section as its evaluator's Result (ResultError names the section and the fix)."""
    try:
        return EVALUATORS.get(name).Result.from_dict(data, where=name)
    except ResultError as err:
        raise ResultError(f"{err}; rerun `dgmbench evaluate --only {name}` on that run") from None


# Importing the modules registers their evaluators.
from . import training  # noqa: E402,F401
from . import likelihood  # noqa: E402,F401
from . import normalisation  # noqa: E402,F401
from . import compression, lossy  # noqa: E402,F401
from . import sampling  # noqa: E402,F401
from . import fidelity  # noqa: E402,F401
from . import probe  # noqa: E402,F401
from . import ood  # noqa: E402,F401
