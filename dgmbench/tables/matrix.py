"""The lecture's comparison matrix, rebuilt from measurements, and the tables behind it.

``results/tables/matrix.{csv,md,tex}``: one row per generative family in the runs (ARM, flow, GAN, VAE,
hierarchical VAE, diffusion, ...), one column per property, and in every cell the verdict *with the numbers it
was derived from*. The rules live in :func:`training_cell`, :func:`likelihood_cell`, :func:`sampling_cell`,
:func:`lossy_cell`, :func:`lossless_cell`; their thresholds in one place, :data:`THRESHOLDS`, printed under the
table. Where a measured verdict differs from the lecture's, the ``vs lecture`` column says so.

Also written here: ``speed``, ``compression``, ``rate_distortion`` and ``stability`` tables. A family or section
missing from the runs shows "—"; nothing here assumes a family exists.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..metrics.stability import final_metric, lr_sensitivity, rise_fraction, seed_stability
from . import NOT_MEASURED, fmt_mean_sd, fmt_stderr, group_runs, mean_sd, register_table, results, write_table

MISSING = "—"


@dataclass(frozen=True)
class Thresholds:
    """Every threshold a verdict uses (shown in the matrix's notes)."""

    max_seed_cv: float = 0.05  # training "stable": seed CV of the final test metric ≤ 5 % ...
    max_diverged: int = 0  # ... and no run failed (diverged, or a non-finite final metric) ...
    max_noise: float = 0.02  # ... and the loss's relative epoch-to-epoch noise (stability.curve_noise) ≤ 2 %
    exact_tolerance: float = 1e-3  # likelihood "exact": |Σp − 1| ≤ this on every enumerated toy space
    max_fast_passes: int = 1  # sampling "fast": at most this many network passes per sample ...
    min_fast_samples_per_s: float = 500.0  # ... and at least this many samples/s at the largest batch measured
    max_lossless_overhead: float = 0.01  # lossless "yes" needs an exact round trip; coded/NLL − 1 above this is flagged


THRESHOLDS = Thresholds()


def threshold_gap(name: str, threshold: float, measured: list[tuple[float, str]]) -> str:
    """Where a threshold sits in the measured distribution (sorted (value, model) pairs), in words: the largest
    value at or below it, the smallest above, and a warning when a measured value lies within a factor 1.5 of it
    (a verdict that a rerun could flip). The pairs need not be sorted."""
    measured = sorted(measured)
    if not measured:
        return ""
    below = [(v, m) for v, m in measured if v <= threshold]
    above = [(v, m) for v, m in measured if v > threshold]
    parts = []
    if below and above:
        parts.append(f"{name} sits in the gap between {below[-1][1]} ({fmt_pct(below[-1][0])}) and "
                     f"{above[0][1]} ({fmt_pct(above[0][0])}), a ratio of {above[0][0] / max(below[-1][0], 1e-12):.1f}")
    elif below:
        parts.append(f"every family is below {name}; the largest, {below[-1][1]}, is at "
                     f"{below[-1][0] / threshold:.0%} of it")
    else:
        parts.append(f"every family is above {name}")
    close = [m for v, m in measured if threshold / 1.5 <= v <= threshold * 1.5]
    if close:
        parts.append(f"within ×1.5 of the threshold, so a rerun could flip the verdict: {', '.join(close)}")
    return "; ".join(parts) + "."

# The lecture's matrix ("Introduction to Deep Generative Modeling"): its four families' rows, and the base models
# that stand for each family here. The flow row has two: the discrete flow (idf), exact on the data's integer
# levels, and the continuous RealNVP/Glow flow, exact as a density of dequantised data but a bound on the levels.
LECTURE_ROWS = {
    "autoregressive": {"training": "stable", "likelihood": "exact", "sampling": "slow", "lossy": "no", "lossless": "yes"},
    "flow": {"training": "stable", "likelihood": "exact", "sampling": "fast/slow", "lossy": "no", "lossless": "yes"},
    "implicit (GAN)": {"training": "unstable", "likelihood": "no", "sampling": "fast", "lossy": "no", "lossless": "no"},
    "prescribed (VAE)": {"training": "stable", "likelihood": "approximate", "sampling": "fast", "lossy": "yes",
                         "lossless": "no"},
}
LECTURE_FAMILY = {"arm": "autoregressive", "idf": "flow", "flow": "flow", "gan": "implicit (GAN)",
                  "vae": "prescribed (VAE)"}
LECTURE = {model: LECTURE_ROWS[fam] for model, fam in LECTURE_FAMILY.items()}
# Why a model's measurement is expected to differ from its family's lecture row (said beside the difference).
EXPECTED_DIFFERENCE = {
    "flow": "a continuous flow's density is exact, but on the data's discrete levels (docs/design.md's one scale) "
            "dequantisation gives a bound, and a code would need bits-back; the discrete flow idf is the flow "
            "that is exact on the levels and codes them",
}
ROW_ORDER = ["arm", "idf", "flow", "gan", "vae", "hvae", "diffusion"]
COLUMNS = {"training": "training", "likelihood": "likelihood", "sampling": "sampling",
           "lossy": "lossy compression", "lossless": "lossless compression"}


# ---------------------------------------------------------------------------------------- formatting
def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands with no decimals), "—" for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    if abs(x) >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_pct(x: float | None) -> str:
    return MISSING if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _mean(values) -> float:
    return mean_sd(values)[0]


# -------------------------------------------------------------------------------------------- verdicts
# Each cell function takes the runs (RunRecords) of one (dataset, model), every seed, and returns
# (verdict word, cell text). They read only typed results; a missing section gives (None, "not measured"),
# which never counts as agreeing with the lecture.
def training_cell(runs: list, th: Thresholds = THRESHOLDS, lr_sens: float = math.nan) -> tuple[str | None, str]:
    if not runs:
        return None, NOT_MEASURED
    s = seed_stability(runs)
    if s["metric"] is None:
        return None, NOT_MEASURED
    reasons = []
    if s["num_failed"] > th.max_diverged:
        reasons.append("failed")
    if not math.isnan(s["cv"]) and s["cv"] > th.max_seed_cv:
        reasons.append("seed CV")
    if not math.isnan(s["noise"]) and s["noise"] > th.max_noise:
        reasons.append("noisy loss")
    # "stable" needs a measurement that could have said otherwise: one seed has no CV, and a curve too short for
    # the noise measure has no noise; with neither, only a failure can give a verdict.
    unmeasured = math.isnan(s["cv"]) and math.isnan(s["noise"])
    verdict = "unstable" if reasons else None if unmeasured else "stable"
    cv = "CV n/a (1 seed)" if len(s["values"]) < 2 else f"CV {fmt_pct(s['cv'])}"
    parts = [f"{cv} of {s['metric']}", f"{s['num_failed']}/{s['num_runs']} failed",
             f"loss noise {fmt_pct(s['noise'])}"]
    if verdict is None:
        return None, f"{NOT_MEASURED} (no seed CV and no loss noise: {', '.join(parts)})"
    if not math.isnan(lr_sens):
        parts.append(f"lr ×0.3–×3 Δ {fmt_pct(lr_sens)}")
    return verdict, f"{verdict} ({', '.join(parts)})"


def likelihood_cell(runs: list, th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    liks = results(runs, "likelihood")
    if not liks:
        return None, NOT_MEASURED
    kind = liks[0].type
    if kind == "none":
        return "no", "no"
    norms = results(runs, "normalisation")
    sums = [v for n in norms for v in n.sums()]
    checks = [n.checkpoint for n in norms if n.checkpoint is not None]
    nll = fmt_num(_mean(x.nll_bpd for x in liks))
    estimator = liks[0].estimator
    se = fmt_stderr([x.stderr_nats for x in liks])
    worse = _mean(x.nll_nats for x in liks) > _mean(x.histogram_nll_nats for x in liks)
    hist = "; WORSE than the per-pixel histogram" if worse else ""
    trained = ""
    if checks:
        failed = [c for c in checks if not c.passed]
        trained = (f"; trained checkpoint: {checks[0].property} violated (max {max(c.max_violation for c in failed):.2g})"
                   if failed else f"; trained checkpoint: {checks[0].property} holds")
    if kind == "exact":
        if not sums:
            return "exact", f"exact (declared; Σp not checked; NLL {nll} bits/dim{trained}{hist})"
        worst = max(sums, key=lambda v: abs(v - 1))
        if abs(worst - 1) <= th.exact_tolerance and not (checks and any(not c.passed for c in checks)):
            return "exact", f"exact (Σp = {worst:.4f} fresh and toy-trained{trained}; NLL {nll} bits/dim{hist})"
        return "not normalised", f"not normalised (Σp = {worst:.4f}{trained}; declared exact)"
    gaps = [x.bound_gap_nats for x in liks if x.bound_gap_nats is not None]
    if gaps:
        parts = [f"{estimator}, s.e. {se} nats; {liks[0].bound_estimator}–{estimator} gap {fmt_num(_mean(gaps))} nats"]
    elif "dequantis" in estimator:
        parts = [f"{estimator}, s.e. {se} nats: the continuous density is exact, the discrete likelihood is bounded"]
    else:
        parts = [f"{estimator}, s.e. {se} nats"]
    if sums:
        parts.append(f"Σ exp(bound) = {max(sums):.3f} ≤ 1")
    if any(v > 1 + th.exact_tolerance for v in sums):
        return "not normalised", f"not a bound (Σ exp(bound) = {max(sums):.4f} > 1)"
    return "approximate", f"approximate (bound; {'; '.join(parts)}; NLL ≤ {nll} bits/dim{hist})"


def sampling_cell(runs: list, th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    ss = results(runs, "sampling")
    if not ss:
        return None, NOT_MEASURED
    passes = ss[0].passes_per_sample
    batch, _ = ss[0].best()
    rate = _mean(s.samples_per_s.get(str(batch)) for s in ss) if batch else math.nan
    fast = passes <= th.max_fast_passes and (math.isnan(rate) or rate >= th.min_fast_samples_per_s)
    verdict = "fast" if fast else "slow"
    where = f" at batch {batch}" if batch else ""
    return verdict, f"{verdict} ({fmt_num(rate)} samples/s{where}, {passes} pass{'es' if passes != 1 else ''})"


def lossy_cell(runs: list, th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    if not runs:
        return None, NOT_MEASURED
    ls = results(runs, "lossy")
    if not ls:
        if all(r.info.evaluated.get("lossy") is False for r in runs):  # ran, and found no latent code
            return "no", "no (no latent code)"
        return None, NOT_MEASURED
    rate = _mean(x.rate_bits_per_image for x in ls)
    mse = _mean(x.mse for x in ls)
    psnr = _mean(x.psnr_db for x in ls)
    psnr_mean = _mean(x.psnr_db_at_mean for x in ls)
    jpeg = jpeg_rate_at(ls[0].jpeg, mse)
    jtext = f"; JPEG {fmt_num(jpeg)} bits at that MSE" if not math.isnan(jpeg) else ""
    return "yes", (f"yes ({fmt_num(rate)} bits/image at PSNR {psnr:.1f} dB with z ~ q (at z = μ: {psnr_mean:.1f} dB)"
                   f"{jtext})")


def lossless_cell(runs: list, th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    cs = results(runs, "compression")
    if not cs:
        return None, NOT_MEASURED
    if not cs[0].coded:
        return "no", f"no ({cs[0].reason_short or 'no coder'})"
    if not all(c.round_trip_exact for c in cs):
        return "no", "no (round trip not exact)"
    coded = _mean(c.coded_bpd for c in cs)
    nll = _mean(c.model_nll_bpd for c in cs)
    flag = ""
    if not math.isnan(nll) and coded / nll - 1 > th.max_lossless_overhead:
        flag = f", overhead {fmt_pct(coded / nll - 1)} > {fmt_pct(th.max_lossless_overhead)}"
    changed = [c.latent_changed_fraction for c in cs if c.latent_changed_fraction is not None]
    if changed:  # a discrete flow: say how much of the image its learned bijection actually moves
        flag += f"; {couplings_note(runs, _mean(changed))}"
    nll_text = f"NLL {nll:.3f}" if not math.isnan(nll) else f"NLL {NOT_MEASURED}"
    return "yes", f"yes ({coded:.3f} coded vs {nll_text} bits/dim on the same images{flag})"


def couplings_note(runs: list, changed: float) -> str:
    """What a discrete flow's couplings do: the fraction of values they move and the NLL gained over its prior
    alone (normalisation's checkpoint check); says plainly when the row rests on the prior."""
    checks = [n.checkpoint for n in results(runs, "normalisation") if n.checkpoint is not None
              and n.checkpoint.prior_alone_nll_nats is not None]
    gain = _mean(c.prior_alone_nll_nats - c.nll_nats for c in checks) if checks else math.nan
    gain_text = f", NLL {fmt_num(gain)} nats/image better than the prior alone" if not math.isnan(gain) else ""
    if changed == 0 or (not math.isnan(gain) and abs(gain) < 0.05):
        return (f"couplings move {fmt_pct(changed)} of values{gain_text}: the row rests on the factor-out prior, "
                "not on learned couplings")
    return f"couplings move {fmt_pct(changed)} of values{gain_text}"


def jpeg_rate_at(points: list[dict], mse: float) -> float:
    """JPEG bits/image at distortion ``mse``: linear in (log MSE, bits) between the bracketing qualities."""
    pts = sorted((p.mse, p.bits_per_image) for p in points if p.mse > 0)
    if math.isnan(mse) or mse <= 0 or len(pts) < 2 or not pts[0][0] <= mse <= pts[-1][0]:
        return math.nan
    for (m0, b0), (m1, b1) in zip(pts, pts[1:]):
        if m0 <= mse <= m1:
            t = 0.0 if m1 == m0 else (math.log(mse) - math.log(m0)) / (math.log(m1) - math.log(m0))
            return b0 + t * (b1 - b0)
    return math.nan


def agrees(measured: str | None, lecture: str | None) -> bool:
    """Whether a measured verdict matches the lecture's ("fast/slow" matches either). A cell that was not measured
    (None) agrees with nothing."""
    return measured is not None and lecture is not None and measured in lecture.split("/")


# -------------------------------------------------------------------------------------------- grouping
def base_groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(dataset, model) → runs of base models only (variants feed the sweeps, not the rows), in row order."""
    groups = {k: g for k, g in group_runs(runs).items() if not g[0].info.variant}
    rank = {m: i for i, m in enumerate(ROW_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], rank.get(kv[0][1], len(rank)), kv[0][1])))


def rate_distortion_groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(dataset, model) → runs with a lossy section for the rate–distortion curve: base models and variants that
    change the model (β, ...) but not the learning rate (the lr sweep's variants measure stability, not rate)."""
    groups = {k: [r for r in g if "lossy" in r.results] for k, g in group_runs(runs).items()}
    base_lr = {k: _mean(x.lr for x in results(g, "training")) for k, g in base_groups(runs).items()}

    def same_lr(r) -> bool:
        base = base_lr.get((r.info.dataset, r.info.base_model), math.nan)
        lr = r.results["training"].lr if "training" in r.results else None
        return math.isnan(base) or lr is None or math.isclose(lr, base, rel_tol=1e-6)

    return {k: g for k, g in groups.items() if g and (not g[0].info.variant or all(same_lr(r) for r in g))}


def is_generative(group: list[dict]) -> bool:
    """A matrix row: the model samples or has a likelihood (self-supervised encoders do neither)."""
    r = group[0]
    return "sampling" in r.results or ("likelihood" in r.results and r.results["likelihood"].type != "none")


def lr_sweep(runs: list[dict], dataset: str, model: str) -> dict[float, float]:
    """Learning-rate multiplier (relative to the base model's lr) → mean final metric over seeds."""
    mine = [r for r in runs if r.info.dataset == dataset and r.info.base_model == model and "training" in r.results]
    base_lr = _mean(r.results["training"].lr for r in mine if not r.info.variant)
    if math.isnan(base_lr):
        return {}
    by_mult: dict[float, list[float]] = {}
    for r in mine:
        lr, fm = r.results["training"].lr, final_metric(r)
        if fm is None or fm[1] is None or r.info.status != "ok":
            continue
        mult = float(f"{lr / base_lr:.2g}")
        if mult == 1.0 and r.info.variant:
            continue  # a variant at the base lr differs in something else (a β sweep): not the ×1 point
        by_mult.setdefault(mult, []).append(fm[1])
    return {m: _mean(v) for m, v in sorted(by_mult.items())}


# ------------------------------------------------------------------------------------------------ tables
@register_table("matrix")
def matrix_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows, mismatches = [], []
    family_rows: dict[tuple[str, str], list[tuple[str, bool]]] = {}  # (dataset, lecture row) → (model, agrees?)
    for (dataset, model), group in base_groups(runs).items():
        if not is_generative(group):
            continue
        sweep = lr_sweep(runs, dataset, model)
        cells = {
            "training": training_cell(group, lr_sens=lr_sensitivity(sweep)),
            "likelihood": likelihood_cell(group),
            "sampling": sampling_cell(group),
            "lossy": lossy_cell(group),
            "lossless": lossless_cell(group),
        }
        lecture = LECTURE.get(model, {})
        differ = [f"{COLUMNS[k]}: lecture {lecture[k]}, measured {v[0]}" for k, v in cells.items()
                  if k in lecture and not agrees(v[0], lecture[k])]
        if lecture:
            family_rows.setdefault((dataset, LECTURE_FAMILY[model]), []).append((model, not differ))
        if differ:
            why = f" (expected: {EXPECTED_DIFFERENCE[model]})" if model in EXPECTED_DIFFERENCE else ""
            mismatches.append(f"{model} ({dataset}): " + "; ".join(differ) + why)
        rows.append({
            "dataset": dataset,
            "family": group[0].info.family,
            "model": model,
            "seeds": len(group),
            **{COLUMNS[k]: v[1] for k, v in cells.items()},
            "vs lecture": ("agrees" if not differ else f"{len(differ)} differ") if lecture else "not in lecture",
        })
    th = ", ".join(f"{f.name} = {getattr(THRESHOLDS, f.name)}" for f in dataclasses.fields(THRESHOLDS))
    notes = [
        "Every verdict is derived from the numbers beside it (dgmbench/tables/matrix.py), thresholds: " + th + ".",
        "training: stable iff no run failed (diverged, or a final metric that is not finite), the seed CV of the "
        "final test metric named in the cell (test NLL bits/dim for likelihood families, the samples' Fréchet "
        "distance for the GAN, the linear-probe accuracy for encoders) ≤ max_seed_cv, and the training loss's "
        "relative epoch-to-epoch noise over its second half (sd of its second difference / √6 / its level, "
        "dgmbench/metrics/stability.py) ≤ max_noise; 'lr Δ' is the largest relative change of that metric "
        "across the ×0.3/×3 learning-rate sweep (config/lr_sweep.yaml), when run. With one seed (no CV) and a "
        "curve too short for the noise measure, no run having failed, the cell says 'not measured' rather than "
        "'stable'.",
        "likelihood: exact iff declared exact, Σp over every image of a tiny enumerable space (1×2×2, 3 levels) "
        "is 1 within exact_tolerance for fresh models of the default and the run's config and for the latter "
        "after a few training steps on that space, and the trained checkpoint passes its own check (causal "
        "conditionals for autoregressive models, a bijection with normalised prior tables for discrete flows); "
        "bound families name their tightest estimator with its standard error (IWAE-k, IW-VLB-K with K "
        "trajectories, ...), the gap to their own single-sample bound, and Σ exp(bound) ≤ 1 on the toy space. "
        "A family whose NLL is worse than the per-pixel histogram baseline is flagged.",
        "sampling: fast iff passes per sample ≤ max_fast_passes and samples/s at the largest batch measured (up to "
        "256; 2-core CPU unless stated) ≥ min_fast_samples_per_s; the lecture's 'fast/slow' for flows matches either.",
        "lossy: yes iff the family has a latent code and a measured rate–distortion point: rate = KL(q‖p) bits/image, "
        "the cost of sending z ~ q, so the PSNR is the decoder's at z ~ q (at z = μ beside it, optimistic); JPEG "
        "bits at the same MSE on the same images for reference.",
        "lossless: yes iff a real ANS bitstream of the test images was written and decoded bit-exactly (the first "
        "verify_images are decoded, 128 by default); coded bits/dim beside the model's NLL on the same images.",
        f"'{NOT_MEASURED}': the evaluator behind that cell did not run (or its section is missing); it never "
        "counts as agreeing with the lecture.",
    ]
    for (dataset, fam), models in family_rows.items():
        agreeing = [m for m, ok in models if ok]
        notes.append(f"lecture row '{fam}' ({dataset}): " + (f"reproduced by {', '.join(agreeing)} in every cell"
                     if agreeing else f"not reproduced by {', '.join(m for m, _ in models)}"))
    notes += [f"differs from the lecture — {m}" for m in mismatches]
    return write_table(pd.DataFrame(rows), out_dir, "matrix", notes=notes, tex=True)


@register_table("speed")
def speed_table(runs: list, out_dir: Path) -> list[Path]:
    rows = []
    for (dataset, model), group in base_groups(runs).items():
        ss = results(group, "sampling")
        if not ss:
            continue
        s0 = ss[0]
        row = {"dataset": dataset, "model": model, "passes/sample": s0.passes_per_sample,
               "samples/s (batch 1)": fmt_num(_mean(s.samples_per_s.get("1") for s in ss))}
        batch, _ = s0.best()
        row["samples/s (largest batch)"] = (f"{fmt_num(_mean(s.samples_per_s.get(str(batch)) for s in ss))} "
                                            f"(batch {batch})" if batch else MISSING)
        naive_batch, _ = s0.best(naive=True)
        if naive_batch:
            row["naive samples/s (batch 1)"] = fmt_num(_mean(s.naive_samples_per_s.get("1") for s in ss))
            row["naive samples/s (largest batch)"] = (
                f"{fmt_num(_mean(s.naive_samples_per_s.get(str(naive_batch)) for s in ss))} (batch {naive_batch})")
            ratio = [s.samples_per_s[str(naive_batch)] / s.naive_samples_per_s[str(naive_batch)] for s in ss
                     if s.samples_per_s.get(str(naive_batch)) and s.naive_samples_per_s.get(str(naive_batch))]
            row["cached/naive speed-up"] = f"{_mean(ratio):.1f}× (batch {naive_batch})" if ratio else MISSING
            row["same samples as naive"] = "yes" if all(s.naive_matches_fast for s in ss) else "NO"
        size = {k: [s.by_size[k] for s in ss if k in s.by_size] for k in ("8x8", "28x28")}
        r8 = _mean(e.samples_per_s.get("1") for e in size["8x8"])
        r28 = _mean(e.samples_per_s.get("1") for e in size["28x28"])
        passes = {k: (v[0].passes_per_sample if v and v[0].passes_per_sample is not None else MISSING)
                  for k, v in size.items()}
        row["passes 8×8 → 28×28"] = f"{passes['8x8']} → {passes['28x28']}"
        row["samples/s 8×8 → 28×28 (batch 1)"] = f"{fmt_num(r8)} → {fmt_num(r28)}"
        row["time/sample ×"] = fmt_num(r8 / r28 if r28 and not math.isnan(r28) else math.nan, 2)
        rows.append(row)
    df = pd.DataFrame(rows).fillna(MISSING) if rows else pd.DataFrame(rows)
    notes = ["Median of up to 5 timed calls after a warm-up, at batch sizes 1, 4, 16, 64, 256 in turn; a size whose one "
             "call is predicted (linearly from the previous size) to exceed max_call_seconds is skipped, and the "
             "largest size measured is shown. Mean over seeds. Machine: the run's device "
             "(a 2-core CPU, 1 thread per job, in the default benchmark).",
             "naive: the autoregressive sampler that recomputes the whole network for every position; speed-up at the "
             "largest batch both paths measured; 'same samples': both drew identical images from one seed.",
             "8×8 / 28×28: freshly initialised models of the same family and config at that size, with the data's "
             "channels and levels (speed does not depend on training); 'time/sample ×' = 28×28 over 8×8 at batch 1."]
    return write_table(df, out_dir, "speed", notes=notes)


@register_table("compression")
def compression_table(runs: list, out_dir: Path) -> list[Path]:
    rows = []
    baselines: dict[str, object] = {}
    for (dataset, model), group in base_groups(runs).items():
        cs = results(group, "compression")
        if not cs:
            continue
        baselines.setdefault(dataset, cs[0])
        c0 = cs[0]
        changed = [c.latent_changed_fraction for c in cs if c.latent_changed_fraction is not None]
        rows.append({
            "dataset": dataset,
            "coder": f"{model} + ANS" if c0.coded else model,
            "bits/dim": fmt_mean_sd([c.coded_bpd for c in cs], 3) if c0.coded else MISSING,
            "ideal −log₂p (bits/dim)": fmt_mean_sd([c.ideal_bpd for c in cs], 3) if c0.coded else MISSING,
            "model NLL (bits/dim)": fmt_mean_sd([c.model_nll_bpd for c in cs], 3),
            "ideal / NLL − 1": (fmt_pct(_mean(c.ideal_bpd / c.model_nll_bpd - 1 for c in cs
                                               if c.model_nll_bpd and c.ideal_bpd is not None))
                                if c0.coded else MISSING),
            "round trip": ("exact" if all(c.round_trip_exact for c in cs) else "FAILED") if c0.coded else MISSING,
            "test images": f"{c0.num_images} ({c0.images_sha1})",
            "notes": ((c0.coder if c0.coded else c0.reason) or "") + (
                f"; z ≠ x at {fmt_pct(_mean(changed))} of values" if changed else ""),
        })
    names = {"uniform": "uniform code, log₂ L", "gzip": "gzip -9", "lzma": "lzma (xz -9)", "png": "PNG (optimised)",
             "webp_lossless": "WebP lossless"}
    for dataset, c in baselines.items():
        for key, label in names.items():
            value = c.uniform_bpd if key == "uniform" else c.baselines.get(f"{key}_bpd")
            rows.append({"dataset": dataset, "coder": label, "bits/dim": fmt_num(value),
                         "ideal −log₂p (bits/dim)": MISSING, "model NLL (bits/dim)": MISSING, "ideal / NLL − 1": MISSING,
                         "round trip": ("exact" if c.baselines_round_trip else "FAILED") if key != "uniform" else MISSING,
                         "test images": f"{c.num_images} ({c.images_sha1})",
                         "notes": "no model" if key == "uniform" else c.baseline_storage})
    notes = ["bits/dim = length of the stored bitstream (whole 32-bit words) / (test images × dims); all coders see "
             "the same test images, stored as their levels 0..L−1, and so does the likelihood evaluator: 'model NLL' "
             "is on exactly these images ('test images': count and index hash), so for an exact model the ideal "
             "code length −log₂p and the NLL must agree ('ideal / NLL − 1').",
             "Families without a coder: the reason is given; their NLL (or bound) is the ideal rate a suitable coder "
             "(bits-back, discrete flow) could approach."]
    return write_table(pd.DataFrame(rows), out_dir, "compression", notes=notes)


@register_table("rate_distortion")
def rate_distortion_table(runs: list, out_dir: Path) -> list[Path]:
    rows = []
    jpeg: dict[str, list] = {}
    for (dataset, model), group in rate_distortion_groups(runs).items():
        ls = results(group, "lossy")
        jpeg.setdefault(dataset, ls[0].jpeg)
        mse = _mean(x.mse for x in ls)
        beta = ls[0].beta
        rows.append({"dataset": dataset, "coder": model, "β": MISSING if beta is None else f"{beta:g}",
                     "rate (bits/image)": fmt_mean_sd([x.rate_bits_per_image for x in ls], 1),
                     "MSE at z ~ q (levels²)": fmt_mean_sd([x.mse for x in ls], 3),
                     "MSE s.e.": fmt_stderr([x.mse_stderr for x in ls]),
                     "PSNR at z ~ q (dB)": fmt_mean_sd([x.psnr_db for x in ls], 1),
                     "PSNR at z = μ (dB)": fmt_mean_sd([x.psnr_db_at_mean for x in ls], 1),
                     "JPEG bits/image at this MSE": fmt_num(jpeg_rate_at(ls[0].jpeg, mse))})
    for dataset, pts in jpeg.items():
        for p in pts:
            rows.append({"dataset": dataset, "coder": f"JPEG q={p.quality}", "β": MISSING,
                         "rate (bits/image)": f"{p.bits_per_image:.1f}", "MSE at z ~ q (levels²)": f"{p.mse:.3f}",
                         "MSE s.e.": MISSING, "PSNR at z ~ q (dB)": f"{p.psnr_db:.1f}", "PSNR at z = μ (dB)": MISSING,
                         "JPEG bits/image at this MSE": MISSING})
    notes = ["Latent models: rate = KL(q(z|x) ‖ p(z)) in bits per image, the relative-entropy / bits-back cost of "
             "sending one sample z ~ q(z|x) (an ideal rate, not a bitstream); the distortion it pays for is the MSE of "
             "the decoder mean at that sampled z, in level units (s.e. over the test images); the decoder at z = μ(x) "
             "is beside it, better-looking but not what the rate sends. PSNR = 10 log₁₀((L−1)²/MSE).",
             "JPEG: greyscale, the test images tiled into one mosaic (levels × 255/(L−1)), bits = file size / images."]
    return write_table(pd.DataFrame(rows), out_dir, "rate_distortion", notes=notes)


@register_table("stability")
def stability_table(runs: list, out_dir: Path) -> list[Path]:
    rows = []
    for (dataset, model), group in base_groups(runs).items():
        s = seed_stability(group)
        sweep = lr_sweep(runs, dataset, model)
        verdict, _ = training_cell(group, lr_sens=lr_sensitivity(sweep))
        trainings = results(group, "training")
        rises = [rise_fraction(t.train_loss) for t in trainings]
        rows.append({
            "dataset": dataset,
            "model": model,
            "final metric": s["metric"] or NOT_MEASURED,
            "mean ± sd": fmt_mean_sd(s["values"], 3),
            "seed CV": fmt_pct(s["cv"]),
            "failed": f"{s['num_failed']}/{s['num_runs']} ({s['num_diverged']} diverged)",
            "training loss": trainings[0].loss_name if trainings else NOT_MEASURED,
            "loss noise": fmt_pct(s["noise"]),
            "loss rose in": fmt_pct(_mean(rises)),
            "lr sweep (×: metric)": ", ".join(f"×{m:g}: {fmt_num(v)}" for m, v in sweep.items()) if len(sweep) > 1 else MISSING,
            "lr sensitivity": fmt_pct(lr_sensitivity(sweep)),
            "verdict": verdict or NOT_MEASURED,
        })
    noise = sorted((v, m) for (d, m), g in base_groups(runs).items()
                   for v in [seed_stability(g)["noise"]] if not math.isnan(v))
    spread = ", ".join(f"{m} {fmt_pct(v)}" for v, m in noise)
    cvs = sorted((v, m) for (d, m), g in base_groups(runs).items()
                 for v in [seed_stability(g)["cv"]] if not math.isnan(v))
    notes = ["final metric: the test NLL (bits/dim) for likelihood families, the Fréchet distance of the samples for "
             "the other sampling families (GAN), the linear-probe test accuracy for encoders; seed CV = sample sd / "
             "|mean| of it over the runs that did not fail. failed = diverged, or a final metric that is not finite.",
             "loss noise = relative epoch-to-epoch noise of the training loss over its second half: sd of the second "
             "difference / √6 (σ for white noise) / the mean |loss| there; it ignores the curve's level and slow "
             "trends, so equal noise on a decaying and a flat curve scores the same (tests/test_stability.py). "
             f"Threshold max_noise = {fmt_pct(THRESHOLDS.max_noise)}; measured here: {spread or '—'}. "
             + threshold_gap("max_noise", THRESHOLDS.max_noise, noise),
             f"Threshold max_seed_cv = {fmt_pct(THRESHOLDS.max_seed_cv)}; measured here: "
             f"{', '.join(f'{m} {fmt_pct(v)}' for v, m in cvs) or '—'}. "
             + threshold_gap("max_seed_cv", THRESHOLDS.max_seed_cv, cvs),
             "'loss rose in' = fraction of epochs whose training loss went up (a minimised loss rarely rises; an "
             "adversarial game's does). 'training loss' names the curve (the GAN's is its discriminator's loss).",
             "lr sensitivity = max relative change of the final metric at ×0.3 and ×3 the family's learning rate "
             "(config/lr_sweep.yaml, mean over its seeds) against ×1."]
    return write_table(pd.DataFrame(rows), out_dir, "stability", notes=notes)
