"""Training stability: pure functions over runs' typed results (the matrix's training column reads these).

Three measurements, each a number in the comparison matrix:

* **seed spread** — coefficient of variation (sample sd / |mean|) over seeds of the final test metric. The metric
  is the first of :data:`FINAL_METRIC_KEYS` a run reports: the test NLL (bits/dim) for likelihood families, the
  Fréchet distance of the samples for the other sampling families (the GAN), the linear-probe test accuracy for
  encoders, and as a last resort the final training loss.
* **divergence** — how many runs the trainer (or the family's ``check_diverged``) marked ``diverged``, or whose
  final metric is not finite (a seed whose numbers are NaN counts as failed, never silently dropped).
* **curve noise** — of the per-epoch training loss L_1..L_T, over its second half (the part where a minimised
  loss should have settled; at least 4 epochs):

      noise = sd_t(L_{t+1} − 2 L_t + L_{t−1}) / √6  /  mean_t |L_t|.

  The second difference removes the curve's level and any linear trend (a slow decay contributes only its
  curvature), and for white noise of sd σ its sd is √6 σ, so the numerator estimates σ; dividing by the level
  makes it the loss's relative epoch-to-epoch noise. Equal noise on a decaying and on a flat curve at the same
  level scores the same; a smooth curve scores ≈ 0 (tests/test_stability.py checks both on synthetic curves).
  The previous "roughness" divided by the curve's range instead, so it measured the curve's shape: the same noise
  scored 20× higher on a flat curve than on a decaying one.
  Beside it, ``rise_fraction``: the fraction of epochs whose loss rose (informative, not used in verdicts).

The learning-rate sensitivity sweep (``config/lr_sweep.yaml``: ×0.3, ×1, ×3 the family's default) gives
:func:`lr_sensitivity`: the largest relative change of the final metric across the learning rates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


# (section, attribute, lower is better, label) — the final test metric of the seed spread, first present wins.
FINAL_METRIC_KEYS: tuple[tuple[str, str, bool, str], ...] = (
    ("likelihood", "nll_bpd", True, "test NLL (bits/dim)"),
    ("sample_quality", "fd", True, "Fréchet distance of samples"),
    ("probe", "linear_test_acc", False, "linear-probe test accuracy"),
    ("training", "final_train_loss", True, "final training loss"),
)
MIN_NOISE_EPOCHS = 4  # the second half of the curve needs this many epochs for a noise estimate


def _json_float(v) -> float | None:
    """A float for metrics.json: NaN/inf (and None) become None, so the file stays strict JSON."""
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def coefficient_of_variation(values: Iterable[float]) -> float:
    """Sample sd (ddof = 1) / |mean| of the finite values; NaN for fewer than two, inf for a zero mean."""
    vals = _finite(values)
    if len(vals) < 2:
        return math.nan
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return math.inf if mean == 0 else sd / abs(mean)


def final_metric(run) -> tuple[str, float | None] | None:
    """(label, value) of a run's final test metric: the first of :data:`FINAL_METRIC_KEYS` whose section the run
    has (``run.results``: name → typed Result). The value is None when that number is missing or not finite — a
    failed seed, which :func:`seed_stability` counts; None when the run has none of the sections."""
    for section, attr, _, label in FINAL_METRIC_KEYS:
        res = run.results.get(section)
        value = getattr(res, attr, None) if res is not None else None
        if res is not None and (section != "likelihood" or res.type != "none"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            return label, float(value) if ok else None
    return None


def diverged_count(runs: Sequence) -> int:
    """Runs whose training status is not ``ok``."""
    return sum(1 for r in runs if r.info.status != "ok")


def curve_noise(losses: Sequence[float]) -> float:
    """Relative epoch-to-epoch noise of the second half of a curve (module docstring); NaN below
    :data:`MIN_NOISE_EPOCHS` epochs there or for a curve that is not finite."""
    vals = [float(v) for v in losses if v is not None]
    tail = vals[len(vals) // 2 :]
    if len(tail) < MIN_NOISE_EPOCHS or not all(math.isfinite(v) for v in tail):
        return math.nan
    d2 = [tail[t + 1] - 2 * tail[t] + tail[t - 1] for t in range(1, len(tail) - 1)]
    mean = sum(d2) / len(d2)
    sd = math.sqrt(sum((d - mean) ** 2 for d in d2) / (len(d2) - 1)) if len(d2) > 1 else abs(d2[0])
    level = sum(abs(v) for v in tail) / len(tail)
    return math.inf if level == 0 else sd / math.sqrt(6.0) / level


def rise_fraction(losses: Sequence[float]) -> float:
    """Fraction of steps t → t+1 where the curve rose; NaN below two points."""
    vals = _finite(losses)
    if len(vals) < 2:
        return math.nan
    return sum(1 for a, b in zip(vals, vals[1:]) if b > a) / (len(vals) - 1)


def seed_stability(runs: Sequence) -> dict:
    """Stability summary of one (dataset, model) over its seeds (RunRecords with typed results).

    ``num_failed`` counts the runs that diverged *or* finished with a missing/non-finite final metric; ``values``
    holds the finite final metrics of the others, whose CV is the seed spread."""
    finals = [final_metric(r) for r in runs]
    labels = [f[0] for f in finals if f]
    label = next((lab for _, _, _, lab in FINAL_METRIC_KEYS if lab in labels), None)
    values, failed = [], 0
    for r, f in zip(runs, finals):
        if r.info.status != "ok" or f is None or f[0] != label or f[1] is None:
            failed += 1
        else:
            values.append(f[1])
    noise = _finite(curve_noise(r.results["training"].train_loss) for r in runs if "training" in r.results)
    return {
        "num_runs": len(runs),
        "num_diverged": diverged_count(runs),
        "num_failed": failed,
        "metric": label,
        "values": values,
        "cv": coefficient_of_variation(values),
        "noise": sum(noise) / len(noise) if noise else math.nan,
    }


def lr_sensitivity(final_by_multiplier: dict[float, float]) -> float:
    """max_m |f(m) − f(1)| / |f(1)| over the swept learning-rate multipliers m; NaN without the ×1 point."""
    base = final_by_multiplier.get(1.0)
    others = _finite(v for m, v in final_by_multiplier.items() if m != 1.0)
    if base is None or not math.isfinite(base) or base == 0 or not others:
        return math.nan
    return max(abs(v - base) for v in others) / abs(base)
