"""Sampling speed: samples per second, network passes per sample, and how both grow with the image size.

What is measured (evaluator ``sampling``, for ``can_sample`` models), on the run's device:

* samples/s at batch sizes 1, 4, 16, 64 and 256, each the median over up to ``repeats`` timed calls after a warm-up call,
  within a per-measurement time budget (a slow sampler gets fewer repeats, never fewer than one); a batch size
  whose single call would take longer than ``max_call_seconds`` (predicted from the previous size, from its CPU
  seconds on the CPU, so a loaded machine does not skip what a quiet one measures) is skipped;
* ``passes_per_sample``: network evaluations per sample, the model's declared ``sampling_passes`` (1 for one-shot
  decoders, D for an ARM, T for diffusion);
* for ``autoregressive`` models also the naive sampler ``sample_naive`` (every step recomputes the network on the
  whole partial image) at the same batch sizes, and whether the fast (cached) sampler draws the *same* images
  from the same seed — the speed-up is only a speed-up if the samples are identical;
* growth with image size: a freshly initialised model of the same family and config, built for 8×8 and 28×28
  images with the data's channels and levels (speed does not depend on training), timed the same way.

Every figure keeps its evidence in ``timing`` (:class:`SpeedMeasurement`): the wall and CPU seconds of each timed
call, the warm-up, the load average, and for a skipped batch size the reason — nothing is dropped silently.
Every timing lives under a key ending in ``_per_s`` or ``_seconds`` or named ``timing`` (the determinism test
ignores those); all other values (batch sizes, passes, shapes, the identity check) are deterministic.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..clock import load_average
from ..data import DatasetInfo
from . import Result, register_evaluator


@dataclass
class SamplingConfig:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16, 64, 256])  # increasing; timed in turn
    repeats: int = 5  # timed calls per measurement (median), after one warm-up call
    measure_seconds: float = 1.0  # stop repeating a measurement once this much time was spent on it
    max_call_seconds: float = 4.0  # skip a batch size whose one call is predicted to take longer than this
    # (from the previous size's median call, its CPU seconds where fewer than its wall seconds on the CPU)
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


class Calls(NamedTuple):
    """The calls behind one measurement: wall and process CPU seconds of each timed call, and the warm-up's."""

    wall: list[float]
    cpu: list[float]
    warmup: float | None  # seconds of the untimed warm-up call (None: no warm-up, or it was the timed call)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    def predict(self, device) -> float:
        """Seconds one call would take on a quiet machine: on the CPU the median CPU seconds when fewer than the
        median wall seconds (a loaded machine's wall clock counts the time spent waiting for a core); on a GPU
        the wall seconds (the CPU waits for the GPU there)."""
        if torch.device(device).type == "cpu":
            return min(self.median, statistics.median(self.cpu))
        return self.median


def _timed(fn, device) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


@torch.no_grad()
def time_call(fn, *, repeats: int, budget_seconds: float, device="cpu", warmup: bool = True) -> Calls:
    """Up to ``repeats`` timed calls of ``fn()``, stopping once ``budget_seconds`` are spent (at least one timed
    call); the figure is their median wall time. With ``warmup`` the first call is an untimed warm-up — unless it
    alone took longer than the budget, in which case a slow sampler is not run twice and that call is the one
    timed call."""
    wall: list[float] = []
    cpu: list[float] = []
    first = None
    if warmup:
        first = _timed(fn, device)
        if first[0] > budget_seconds:
            return Calls([first[0]], [first[1]], None)
    while len(wall) < repeats and (not wall or sum(wall) < budget_seconds):
        dt, dc = _timed(fn, device)
        wall.append(dt)
        cpu.append(dc)
    return Calls(wall, cpu, first[0] if first else None)


@dataclass
class SpeedMeasurement(Result):
    """The evidence behind one samples/s figure: every timed call, or why the batch size was not measured."""

    sampler: str  # "cached" (model.sample), "naive" (model.sample_naive), or a size probe's "8x8", "28x28"
    batch_size: int  # images per call
    call_seconds: list[float]  # wall-clock seconds of each timed call; the figure is batch_size / their median
    cpu_seconds: list[float]  # process CPU seconds (all threads) of the same calls
    warmup_seconds: float | None  # the untimed warm-up call (None: none made, or it was the one timed call)
    skipped: str | None  # why this batch size was not measured (None: it was)
    load_average: list[float] | None  # os.getloadavg() (1, 5, 15 min) when the measurement ended


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
    timing: list[SpeedMeasurement] = field(default_factory=list)  # every measurement behind the figures, skipped ones included

    def best(self, naive: bool = False) -> tuple[int | None, float | None]:
        """(batch size, samples/s) of the largest batch measured (of the naive sampler with ``naive``)."""
        rates = (self.naive_samples_per_s or {}) if naive else self.samples_per_s
        done = [(int(n), r) for n, r in rates.items() if r is not None]
        return max(done) if done else (None, None)


def sampler_speed(sample_fn, *, batch_sizes: list[int], repeats: int, budget_seconds: float,
                  max_call_seconds: float, device="cpu", sampler: str = "cached"
                  ) -> tuple[dict[str, float | None], list[SpeedMeasurement]]:
    """Batch size (as a string) → samples/s of ``sample_fn(n)`` for each n of the increasing ``batch_sizes``, and
    one :class:`SpeedMeasurement` per batch size, measured or skipped.

    A batch size is skipped (``None``, and so are the larger ones) when the previous measurement, scaled linearly
    to it, predicts one call longer than ``max_call_seconds`` — an upper bound, as batching never makes a
    sample slower — so a slow sampler (an ARM's naive path, diffusion at 28×28) does not blow the time budget.
    The prediction uses :meth:`Calls.predict`, so it does not grow with the machine's load.
    """
    out: dict[str, float | None] = {str(n): None for n in batch_sizes}
    measurements: list[SpeedMeasurement] = []
    prev = None  # (batch size, predicted seconds per call) of the last measurement
    for n in batch_sizes:
        if prev is not None and prev[1] * n / prev[0] > max_call_seconds:
            reason = (f"one call predicted to take {prev[1] * n / prev[0]:.2g} s (from batch {prev[0]}) "
                      f"> max_call_seconds {max_call_seconds:g}")
            measurements.append(SpeedMeasurement(sampler, n, [], [], None, reason, load_average()))
            continue
        # Only the first size gets a warm-up call; the ones after it run on a warm sampler.
        calls = time_call(lambda: sample_fn(n), repeats=repeats, budget_seconds=budget_seconds, device=device,
                          warmup=prev is None)
        out[str(n)] = n / calls.median
        measurements.append(SpeedMeasurement(sampler, n, calls.wall, calls.cpu, calls.warmup, None, load_average()))
        prev = (n, calls.predict(device))
    return out, measurements


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
    rates, timing = sampler_speed(model.sample, **speed)
    out = SamplingResult(passes_per_sample=int(model.sampling_passes), shape=list(model.info.shape),
                         batch_sizes=list(cfg.batch_sizes), samples_per_s=rates,
                         naive_samples_per_s=None, naive_matches_fast=None, by_size={}, timing=timing)
    if model.autoregressive:
        # The contract's autoregressive families provide a naive sampler beside the cached one.
        a = _seeded(model.sample, cfg.identity_check_samples, seed, device)
        b = _seeded(model.sample_naive, cfg.identity_check_samples, seed, device)
        out.naive_matches_fast = bool(torch.equal(a.cpu(), b.cpu()))
        out.naive_samples_per_s, naive = sampler_speed(model.sample_naive, **speed, sampler="naive")
        out.timing += naive
    for s in cfg.probe_sizes:
        info = size_probe_info(model.info, s)
        trained = info.shape == model.info.shape
        try:
            probe = model if trained else type(model)(model.cfg, info).to(device).eval()
        except Exception as err:  # an architecture that cannot be built at this size; record, do not fail the run
            out.by_size[f"{s}x{s}"] = SizeProbe(list(info.shape), trained, None,
                                                {str(n): None for n in cfg.probe_batch_sizes}, f"{type(err).__name__}: {err}")
            continue
        rates, timing = sampler_speed(probe.sample, batch_sizes=cfg.probe_batch_sizes, repeats=cfg.repeats,
                                      budget_seconds=cfg.probe_seconds, max_call_seconds=cfg.max_call_seconds,
                                      device=device, sampler=f"{s}x{s}")
        out.timing += timing
        out.by_size[f"{s}x{s}"] = SizeProbe(list(info.shape), trained, int(probe.sampling_passes), rates, None)
    return out


@register_evaluator("sampling", config=SamplingConfig, result=SamplingResult)
def evaluate_sampling(ctx, cfg: SamplingConfig) -> SamplingResult | None:
    if not ctx.model.can_sample:
        return None
    return evaluate_sampling_speed(ctx.model, cfg, ctx.device, seed=ctx.run.seed)
