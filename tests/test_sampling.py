"""Sampling-speed measurement: the timer, the batch-size ladder (and the record of what it skipped), the size probe
and the ARM identity check."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import small_info
from dgmbench.metrics.sampling import (Calls, SamplingConfig, SamplingResult, evaluate_sampling_speed, sampler_speed,
                                       time_call)
from dgmbench.models.base import GenerativeModel


@dataclass
class StubConfig:
    passes_per_pixel: int = 0  # 0: one pass per sample; 1: one pass per pixel (autoregressive-like)


class StubSampler(GenerativeModel):
    """Draws uniform levels; declares its passes from the config and the image size."""

    can_sample = True
    Config = StubConfig

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.w = nn.Parameter(torch.zeros(1))

    @property
    def sampling_passes(self):
        return self.info.num_dims if self.cfg.passes_per_pixel else 1

    def _sample(self, n):
        return torch.randint(0, self.info.num_levels, (n, *self.info.shape))


class StubAR(StubSampler):
    autoregressive = True
    naive_differs = False

    def sample_naive(self, n):
        x = self._sample(n)
        return x + 1 if self.naive_differs else x


FAST = SamplingConfig(batch_sizes=[1, 4], repeats=2, measure_seconds=0.05, probe_batch_sizes=[1, 2],
                      probe_seconds=0.05, identity_check_samples=4)


def burn(cpu_seconds: float) -> None:
    """Keep this process's CPU busy for ``cpu_seconds`` of CPU time (more wall time on a loaded machine)."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_time_call_takes_the_median_and_stops_at_the_budget():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.02)

    timed = time_call(fn, repeats=50, budget_seconds=0.1)
    assert timed.median == statistics.median(timed.wall) >= 0.02
    assert timed.warmup is not None and timed.warmup >= 0.02  # the warm-up is recorded, not timed
    # One warm-up, then timed calls until ≥ 0.1 s were spent: each call takes ≥ 0.02 s, so at most 5 are timed
    # (a loaded machine may stop sooner, never later), and never fewer than one.
    assert 1 + len(timed.wall) == len(calls)
    assert 1 <= len(timed.wall) <= 5 and len(timed.cpu) == len(timed.wall)
    assert sum(timed.wall[:-1]) < 0.1  # it stopped at the first call that reached the budget
    # A sleeping call uses (almost) no CPU: the CPU clock is this process's, not the wall clock.
    assert all(c < w for c, w in zip(timed.cpu, timed.wall))


def test_slow_batch_sizes_are_skipped_from_the_prediction_and_recorded():
    """A sampler costing 0.05 CPU seconds per image: batch 4 (0.2 s predicted) runs, batch 64 (3.2 s) is skipped,
    and the skip is recorded with its reason, beside the calls of the sizes measured."""
    seen = []

    def fn(n):
        seen.append(n)
        burn(0.05 * n)

    out, timing = sampler_speed(fn, batch_sizes=[1, 4, 64], repeats=2, budget_seconds=1e6,  # repeats bind, not time
                                max_call_seconds=1.0)
    assert 64 not in seen and out["64"] is None
    assert [(m.sampler, m.batch_size) for m in timing] == [("cached", 1), ("cached", 4), ("cached", 64)]
    one, four, skipped = timing
    assert skipped.skipped and "max_call_seconds 1" in skipped.skipped and skipped.call_seconds == []
    assert one.skipped is None and four.skipped is None
    for m in (one, four):  # the figure is the batch over the median of the recorded calls, and nothing else
        assert len(m.call_seconds) == 2 == len(m.cpu_seconds)
        assert out[str(m.batch_size)] == m.batch_size / statistics.median(m.call_seconds)
        assert all(c >= 0.05 * m.batch_size for c in m.cpu_seconds)
    assert one.warmup_seconds is not None and four.warmup_seconds is None  # only the first size warms up
    result = SamplingResult(passes_per_sample=1, shape=[1, 1, 1], batch_sizes=[1, 4, 64], samples_per_s=out,
                            naive_samples_per_s=None, naive_matches_fast=None, by_size={}, timing=timing)
    assert result.best() == (4, out["4"])
    assert SamplingResult.from_dict(result.to_dict()) == result  # the record round-trips through metrics.json


def test_the_skip_prediction_does_not_grow_with_the_load():
    """On the CPU a call's quiet-machine time is its CPU seconds when the wall clock (which counts waiting for a
    core) reads more; on a GPU the CPU only waits, so the wall clock is the prediction."""
    loaded = Calls(wall=[2.0, 3.0, 2.5], cpu=[0.5, 0.6, 0.4], warmup=None)
    assert loaded.predict("cpu") == 0.5
    assert loaded.predict("cuda") == 2.5
    threaded = Calls(wall=[1.0], cpu=[1.9], warmup=None)  # two threads on a quiet machine: CPU > wall
    assert threaded.predict("cpu") == 1.0


def test_a_sampling_section_written_before_the_timing_record_still_parses():
    old = {"passes_per_sample": 1, "shape": [1, 8, 8], "batch_sizes": [1], "samples_per_s": {"1": 5.0},
           "naive_samples_per_s": None, "naive_matches_fast": None, "by_size": {}}
    assert SamplingResult.from_dict(old).timing == []


def test_sampling_section_records_passes_and_the_size_probe():
    model = StubSampler(StubConfig(passes_per_pixel=1), small_info(shape=(1, 8, 8), num_levels=17))
    out = evaluate_sampling_speed(model, FAST, "cpu")
    assert out.passes_per_sample == 64
    assert out.samples_per_s["1"] > 0 and out.samples_per_s["4"] > 0
    assert out.naive_matches_fast is None and out.naive_samples_per_s is None  # not autoregressive
    assert out.by_size["8x8"].trained and not out.by_size["28x28"].trained
    assert out.by_size["28x28"].shape == [1, 28, 28]
    assert out.by_size["28x28"].passes_per_sample == 28 * 28  # a fresh model of the same config, 28×28
    # Every figure has its measurement record: the trained sampler's batch sizes, then each probe size's.
    assert [(m.sampler, m.batch_size) for m in out.timing] == [("cached", 1), ("cached", 4), ("8x8", 1), ("8x8", 2),
                                                                ("28x28", 1), ("28x28", 2)]


def test_identity_check_can_fail():
    info = small_info(shape=(1, 8, 8), num_levels=17)
    model = StubAR(StubConfig(), info)
    assert evaluate_sampling_speed(model, FAST, "cpu").naive_matches_fast is True
    model.naive_differs = True
    out = evaluate_sampling_speed(model, FAST, "cpu")
    assert out.naive_matches_fast is False
    assert out.naive_samples_per_s["1"] > 0


def test_registered_arm_cached_sampler_equals_the_naive_one(digits):
    from dgmbench.models import MODELS, get_model

    if "arm" not in MODELS:
        pytest.skip("the arm family is not registered")
    torch.manual_seed(0)
    model = get_model("arm", digits.info).eval()
    torch.manual_seed(1)
    fast = model.sample(3)
    torch.manual_seed(1)
    naive = model.sample_naive(3)
    assert torch.equal(fast, naive)
    assert model.sampling_passes == digits.info.num_dims


def test_a_slow_first_call_is_not_repeated():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.03)

    timed = time_call(fn, repeats=5, budget_seconds=0.01)
    assert len(calls) == 1  # the warm-up exceeded the budget: it is the measurement
    assert len(timed.wall) == 1 and timed.median >= 0.03 and timed.warmup is None
