"""Sampling speed: samples per second, network passes per sample, and how both grow with the image size.

What is measured (evaluator ``sampling``, for ``can_sample`` models), on the run's device:

* samples/s at batch sizes 1, 4, 16, 64 and 256, each the median over up to ``repeats`` timed calls after a warm-up call,
  within a per-measurement time budget (a slow sampler gets fewer repeats, never fewer than one); a batch size
  whose single call would take longer than ``max_call_seconds`` (predicted from the previous size) is skipped;
* ``passes_per_sample``: network evaluations per sample, the model's declared ``sampling_passes`` (1 for one-shot
  decoders, D for an ARM, T for diffusion);
* for ``autoregressive`` models also the naive sampler ``sample_naive`` (every step recomputes the network on the
  whole partial image) at the same batch sizes, and whether the fast (cached) sampler draws the *same* images
  from the same seed — the speed-up is only a speed-up if the samples are identical;
* growth with image size: a freshly initialised model of the same family and config, built for 8×8 and 28×28
  images with the data's channels and levels (speed does not depend on training), timed the same way.

Every timing lives under a key ending in ``_per_s`` or ``_seconds`` (the determinism test ignores those); all
other values (batch sizes, passes, shapes, the identity check) are deterministic.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field

import torch

from ..data import DatasetInfo
from . import Result, register_evaluator


@dataclass
class SamplingConfig:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16, 64, 256])  # increasing; timed in turn
    repeats: int = 5  # timed calls per measurement (median), after one warm-up call
    measure_seconds: float = 1.0  # stop repeating a measurement once this much time was spent on it
    max_call_seconds: float = 4.0  # skip a batch size whose one call is predicted to take longer than this
    probe_sizes: list[int] = field(default_factory=lambda: [8, 28])  # square image sizes of the size probe
    probe_batch_sizes: list[int] = field(default_factory=lambda: [1, 16])  # batch sizes of the size probe
    probe_seconds: float = 0.5  # time budget of each size-probe measurement
    identity_check_samples: int = 8  # images drawn by both ARM samplers from one seed to compare

    def validate(self):
        for name in ("batch_sizes", "probe_batch_sizes"):
            sizes = getattr(self, name)
            if not sizes or min(sizes) < 1 or sorted(set(sizes)) != list(sizes):
                raise ValueError(f"{name} must be increasing positive integers, got {sizes}")
        if min(self.repeats, self.identity_check_samples) < 1:
            raise ValueError("repeats and identity_check_samples must be ≥ 1")
        if min(self.measure_seconds, self.probe_seconds, self.max_call_seconds) <= 0:
            raise ValueError("measure_seconds, probe_seconds and max_call_seconds must be > 0")
        if any(s < 1 for s in self.probe_sizes):
            raise ValueError(f"probe_sizes must be positive, got {self.probe_sizes}")


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_call(fn, *, repeats: int, budget_seconds: float, device="cpu", warmup: bool = True) -> float:
    """Median wall-clock seconds of ``fn()`` over up to ``repeats`` calls, stopping once ``budget_seconds``
    are spent (at least one timed call). With ``warmup`` the first call is a warm-up — unless it alone took
    longer than the budget, in which case a slow sampler is not run twice and that call is the measurement."""
    times: list[float] = []
    spent = 0.0
    if warmup:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        first = time.perf_counter() - t0
        if first > budget_seconds:
            return first
    while len(times) < repeats and (not times or spent < budget_seconds):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return statistics.median(times)


@dataclass
class SizeProbe(Result):
    shape: list[int]  # (C, H, W) of the probe
    trained: bool  # the trained model itself (its own size), else a fresh model of the same config
    passes_per_sample: int | None  # network passes per sample at this size (None: could not be built)
    samples_per_s: dict[str, float | None]  # batch size → samples per second (median; None: skipped)
    error: str | None  # why the architecture could not be built at this size


@dataclass
class SamplingResult(Result):
    passes_per_sample: int  # network passes per sample (the model's declaration)
    shape: list[int]  # (C, H, W) sampled
    batch_sizes: list[int]  # batch sizes attempted, in turn
    samples_per_s: dict[str, float | None]  # batch size → samples per second (median of timed calls; None: skipped)
    naive_samples_per_s: dict[str, float | None] | None  # the same for the naive sampler (autoregressive families)
    naive_matches_fast: bool | None  # both samplers drew identical images from one seed
    by_size: dict[str, SizeProbe]  # "8x8", "28x28" → speed of the same family at that size

    def best(self, naive: bool = False) -> tuple[int | None, float | None]:
        """(batch size, samples/s) of the largest batch measured (of the naive sampler with ``naive``)."""
        rates = (self.naive_samples_per_s or {}) if naive else self.samples_per_s
        done = [(int(n), r) for n, r in rates.items() if r is not None]
        return max(done) if done else (None, None)


def sampler_speed(sample_fn, *, batch_sizes: list[int], repeats: int, budget_seconds: float,
                  max_call_seconds: float, device="cpu") -> dict[str, float | None]:
    """Batch size (as a string) → samples/s of ``sample_fn(n)`` for each n of the increasing ``batch_sizes``.

    A batch size is skipped (``None``, and so are the larger ones) when the previous measurement, scaled linearly
    to it, predicts one call longer than ``max_call_seconds`` — an upper bound, as batching never makes a
    sample slower — so a slow sampler (an ARM's naive path, diffusion at 28×28) does not blow the time budget.
    """
    out: dict[str, float | None] = {str(n): None for n in batch_sizes}
    prev = None  # (batch size, seconds per call) of the last measurement
    for n in batch_sizes:
        if prev is not None and prev[1] * n / prev[0] > max_call_seconds:
            break
        # Only the first size gets a warm-up call; the ones after it run on a warm sampler.
        t = time_call(lambda: sample_fn(n), repeats=repeats, budget_seconds=budget_seconds, device=device,
                      warmup=prev is None)
        out[str(n)] = n / t
        prev = (n, t)
    return out


def _seeded(fn, n: int, seed: int, device) -> torch.Tensor:
    torch.manual_seed(seed)
    if torch.device(device).type == "cuda":
        torch.cuda.manual_seed_all(seed)
    return fn(n)


def size_probe_info(info: DatasetInfo, size: int) -> DatasetInfo:
    """The data's channels and levels at a square ``size``×``size`` (a shape-only stand-in for the data)."""
    return dataclasses.replace(info, name=f"{info.name}-{size}x{size}", shape=(info.shape[0], size, size))


@torch.no_grad()
def evaluate_sampling_speed(model, cfg: SamplingConfig, device, seed: int = 0) -> SamplingResult:
    """The ``sampling`` result for a sampler (the trained model): see the module docstring."""
    model.eval()
    speed = dict(batch_sizes=cfg.batch_sizes, repeats=cfg.repeats, budget_seconds=cfg.measure_seconds,
                 max_call_seconds=cfg.max_call_seconds, device=device)
    out = SamplingResult(passes_per_sample=int(model.sampling_passes), shape=list(model.info.shape),
                         batch_sizes=list(cfg.batch_sizes), samples_per_s=sampler_speed(model.sample, **speed),
                         naive_samples_per_s=None, naive_matches_fast=None, by_size={})
    if model.autoregressive:
        # The contract's autoregressive families provide a naive sampler beside the cached one.
        a = _seeded(model.sample, cfg.identity_check_samples, seed, device)
        b = _seeded(model.sample_naive, cfg.identity_check_samples, seed, device)
        out.naive_matches_fast = bool(torch.equal(a.cpu(), b.cpu()))
        out.naive_samples_per_s = sampler_speed(model.sample_naive, **speed)
    for s in cfg.probe_sizes:
        info = size_probe_info(model.info, s)
        trained = info.shape == model.info.shape
        try:
            probe = model if trained else type(model)(model.cfg, info).to(device).eval()
        except Exception as err:  # an architecture that cannot be built at this size; record, do not fail the run
            out.by_size[f"{s}x{s}"] = SizeProbe(list(info.shape), trained, None,
                                                {str(n): None for n in cfg.probe_batch_sizes}, f"{type(err).__name__}: {err}")
            continue
        rates = sampler_speed(probe.sample, batch_sizes=cfg.probe_batch_sizes, repeats=cfg.repeats,
                              budget_seconds=cfg.probe_seconds, max_call_seconds=cfg.max_call_seconds, device=device)
        out.by_size[f"{s}x{s}"] = SizeProbe(list(info.shape), trained, int(probe.sampling_passes), rates, None)
    return out


@register_evaluator("sampling", config=SamplingConfig, result=SamplingResult)
def evaluate_sampling(ctx, cfg: SamplingConfig) -> SamplingResult | None:
    if not ctx.model.can_sample:
        return None
    return evaluate_sampling_speed(ctx.model, cfg, ctx.device, seed=ctx.run.seed)
