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

from ..metrics.sampling import best_rate
from ..metrics.stability import lr_sensitivity, rise_fraction, seed_stability
from . import fmt_mean_sd, group_runs, mean_sd, register_table, write_table

MISSING = "—"


@dataclass(frozen=True)
class Thresholds:
    """Every threshold a verdict uses (shown in the matrix's notes)."""

    max_seed_cv: float = 0.05  # training "stable": seed CV of the final test metric ≤ 5 % ...
    max_diverged: int = 0  # ... and no run diverged ...
    max_roughness: float = 0.1  # ... and training-loss roughness (mean |2nd difference| / range, stability.py) ≤ 0.1
    exact_tolerance: float = 1e-3  # likelihood "exact": |Σp − 1| ≤ this on every enumerated toy space
    max_fast_passes: int = 1  # sampling "fast": at most this many network passes per sample ...
    min_fast_samples_per_s: float = 500.0  # ... and at least this many samples/s at the largest batch measured
    max_lossless_overhead: float = 0.01  # lossless "yes" needs an exact round trip; coded/NLL − 1 above this is flagged


THRESHOLDS = Thresholds()

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
    "flow": "a continuous flow's density is exact, but on the data's discrete levels (DESIGN.md's one scale) "
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


def _sections(runs: list[dict], name: str) -> list[dict]:
    return [r[name] for r in runs if isinstance(r.get(name), dict)]


def _mean(values) -> float:
    return mean_sd(values)[0]


# -------------------------------------------------------------------------------------------- verdicts
# Each cell function takes the runs (metrics dicts) of one (dataset, model), every seed, and returns
# (verdict word, cell text). They read only measured sections; a missing section gives (None, "—").
def training_cell(runs: list[dict], th: Thresholds = THRESHOLDS, lr_sens: float = math.nan) -> tuple[str | None, str]:
    if not runs:
        return None, MISSING
    s = seed_stability(runs)
    reasons = []
    if s["num_diverged"] > th.max_diverged:
        reasons.append("diverged")
    if not math.isnan(s["cv"]) and s["cv"] > th.max_seed_cv:
        reasons.append("seed CV")
    if not math.isnan(s["roughness"]) and s["roughness"] > th.max_roughness:
        reasons.append("rough curve")
    verdict = "unstable" if reasons else "stable"
    cv = "CV n/a (1 seed)" if len(s["values"]) < 2 else f"CV {fmt_pct(s['cv'])}"
    parts = [cv, f"{s['num_diverged']}/{s['num_runs']} diverged", f"roughness {fmt_num(s['roughness'], 2)}"]
    if not math.isnan(lr_sens):
        parts.append(f"lr ×0.3–×3 Δ {fmt_pct(lr_sens)}")
    return verdict, f"{verdict} ({', '.join(parts)})"


def likelihood_cell(runs: list[dict], th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    liks = _sections(runs, "likelihood")
    if not liks:
        return None, MISSING
    kind = liks[0].get("type", "none")
    if kind == "none":
        return "no", "no"
    norms = _sections(runs, "normalisation")
    sums = [n[k]["sum_p"] for n in norms for k in ("fresh_default", "fresh_run_config") if "sum_p" in n.get(k, {})]
    nll = fmt_num(_mean(x.get("nll_bpd") for x in liks))
    if kind == "exact":
        if not sums:
            return "exact", f"exact (declared; Σp not checked; NLL {nll} bits/dim)"
        worst = max(sums, key=lambda v: abs(v - 1))
        if abs(worst - 1) <= th.exact_tolerance:
            return "exact", f"exact (Σp = {worst:.4f}; NLL {nll} bits/dim)"
        return "not normalised", f"not normalised (Σp = {worst:.4f}; declared exact)"
    gaps = [x["elbo_iwae_gap_nats"] for x in liks if "elbo_iwae_gap_nats" in x]
    estimator = liks[0].get("estimator", "bound")
    if gaps:
        parts = [f"ELBO–IWAE gap {fmt_num(_mean(gaps))} nats"]
    elif "dequantis" in estimator:
        parts = [f"{estimator}: the continuous density is exact, the discrete likelihood is bounded"]
    else:
        parts = [estimator]
    if sums:
        parts.append(f"Σ exp(bound) = {max(sums):.3f} ≤ 1")
    if any(v > 1 + th.exact_tolerance for v in sums):
        return "not normalised", f"not a bound (Σ exp(bound) = {max(sums):.4f} > 1)"
    return "approximate", f"approximate (bound; {'; '.join(parts)}; NLL ≤ {nll} bits/dim)"


def sampling_cell(runs: list[dict], th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    ss = _sections(runs, "sampling")
    if not ss:
        return None, MISSING
    passes = ss[0]["passes_per_sample"]
    batch, _ = best_rate(ss[0])
    rate = _mean(s.get(f"batch{batch}_samples_per_s") for s in ss) if batch else math.nan
    fast = passes <= th.max_fast_passes and (math.isnan(rate) or rate >= th.min_fast_samples_per_s)
    verdict = "fast" if fast else "slow"
    where = f" at batch {batch}" if batch else ""
    return verdict, f"{verdict} ({fmt_num(rate)} samples/s{where}, {passes} pass{'es' if passes != 1 else ''})"


def lossy_cell(runs: list[dict], th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    if not runs:
        return None, MISSING
    ls = _sections(runs, "lossy")
    if not ls:
        return "no", "no (no latent code)"
    rate = _mean(x["rate_bits_per_image"] for x in ls)
    mse = _mean(x["mse"] for x in ls)
    psnr = _mean(x["psnr_db"] for x in ls)
    jpeg = jpeg_rate_at(ls[0].get("jpeg", []), mse)
    jtext = f"; JPEG {fmt_num(jpeg)} bits at that MSE" if not math.isnan(jpeg) else ""
    return "yes", f"yes ({fmt_num(rate)} bits/image at PSNR {psnr:.1f} dB{jtext})"


def lossless_cell(runs: list[dict], th: Thresholds = THRESHOLDS) -> tuple[str | None, str]:
    cs = _sections(runs, "compression")
    if not cs:
        return None, MISSING
    if not cs[0].get("coded"):
        return "no", f"no ({cs[0].get('reason_short', 'no coder')})"
    if not all(c.get("round_trip_exact") for c in cs):
        return "no", "no (round trip not exact)"
    coded = _mean(c["coded_bpd"] for c in cs)
    nll = _mean(c.get("model_nll_bpd") for c in cs)
    flag = ""
    if not math.isnan(nll) and coded / nll - 1 > th.max_lossless_overhead:
        flag = f", overhead {fmt_pct(coded / nll - 1)} > {fmt_pct(th.max_lossless_overhead)}"
    changed = [c["latent_changed_fraction"] for c in cs if "latent_changed_fraction" in c]
    if changed:  # a discrete flow: say how much of the image its learned bijection actually moves
        flag += f"; couplings move {fmt_pct(_mean(changed))} of values"
    return "yes", f"yes ({coded:.3f} coded vs NLL {nll:.3f} bits/dim{flag})"


def jpeg_rate_at(points: list[dict], mse: float) -> float:
    """JPEG bits/image at distortion ``mse``: linear in (log MSE, bits) between the bracketing qualities."""
    pts = sorted((p["mse"], p["bits_per_image"]) for p in points if p["mse"] > 0)
    if math.isnan(mse) or mse <= 0 or len(pts) < 2 or not pts[0][0] <= mse <= pts[-1][0]:
        return math.nan
    for (m0, b0), (m1, b1) in zip(pts, pts[1:]):
        if m0 <= mse <= m1:
            t = 0.0 if m1 == m0 else (math.log(mse) - math.log(m0)) / (math.log(m1) - math.log(m0))
            return b0 + t * (b1 - b0)
    return math.nan


def agrees(measured: str | None, lecture: str | None) -> bool:
    """Whether a measured verdict matches the lecture's ("fast/slow" matches either)."""
    return measured is None or lecture is None or measured in lecture.split("/")


# -------------------------------------------------------------------------------------------- grouping
def base_groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(dataset, model) → runs of base models only (variants feed the sweeps, not the rows), in row order."""
    groups = {k: g for k, g in group_runs(runs).items() if not g[0]["run"].get("variant")}
    rank = {m: i for i, m in enumerate(ROW_ORDER)}
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], rank.get(kv[0][1], len(rank)), kv[0][1])))


def rate_distortion_groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(dataset, model) → runs with a lossy section for the rate–distortion curve: base models and variants that
    change the model (β, ...) but not the learning rate (the lr sweep's variants measure stability, not rate)."""
    groups = {k: [r for r in g if "lossy" in r] for k, g in group_runs(runs).items()}
    base_lr = {k: _mean(r.get("training", {}).get("lr") for r in g) for k, g in base_groups(runs).items()}

    def same_lr(r: dict) -> bool:
        base = base_lr.get((r["run"]["dataset"], r["run"].get("base_model", r["run"]["model"])), math.nan)
        lr = r.get("training", {}).get("lr")
        return math.isnan(base) or lr is None or math.isclose(lr, base, rel_tol=1e-6)

    return {k: g for k, g in groups.items() if g and (not g[0]["run"].get("variant") or all(same_lr(r) for r in g))}


def is_generative(group: list[dict]) -> bool:
    """A matrix row: the model samples or has a likelihood (self-supervised encoders do neither)."""
    r = group[0]
    return "sampling" in r or r.get("likelihood", {}).get("type", "none") != "none"


def lr_sweep(runs: list[dict], dataset: str, model: str) -> dict[float, float]:
    """Learning-rate multiplier (relative to the base model's lr) → mean final metric over seeds."""
    from ..metrics.stability import final_metric

    mine = [r for r in runs if r["run"]["dataset"] == dataset and r["run"].get("base_model", r["run"]["model"]) == model]
    base_lr = _mean(r.get("training", {}).get("lr") for r in mine if not r["run"].get("variant"))
    if math.isnan(base_lr):
        return {}
    by_mult: dict[float, list[float]] = {}
    for r in mine:
        lr, fm = r.get("training", {}).get("lr"), final_metric(r)
        if lr is None or fm is None or r["run"]["status"] != "ok":
            continue
        mult = float(f"{lr / base_lr:.2g}")
        if mult == 1.0 and r["run"].get("variant"):
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
            "family": group[0]["run"].get("family", model),
            "model": model,
            "seeds": len(group),
            **{COLUMNS[k]: v[1] for k, v in cells.items()},
            "vs lecture": ("agrees" if not differ else f"{len(differ)} differ") if lecture else "not in lecture",
        })
    th = ", ".join(f"{f.name} = {getattr(THRESHOLDS, f.name)}" for f in dataclasses.fields(THRESHOLDS))
    notes = [
        "Every verdict is derived from the numbers beside it (dgmbench/tables/matrix.py), thresholds: " + th + ".",
        "training: stable iff no diverged run, seed CV of the final test metric (NLL bits/dim for likelihood "
        "families, else FD / probe accuracy / final training loss) ≤ max_seed_cv, and training-loss roughness "
        "(mean |second difference| of the per-epoch loss / its range) ≤ max_roughness; 'lr Δ' is the largest "
        "relative change of that metric across the ×0.3/×3 learning-rate sweep (config/lr_sweep.yaml), when run.",
        "likelihood: exact iff declared exact and Σp over every image of a tiny enumerable space (1×2×2, 3 levels) "
        "is 1 within exact_tolerance, for a fresh model of the default and of the run's config; bound families "
        "report the ELBO–IWAE gap on the test split and Σ exp(bound) ≤ 1 on the toy space.",
        "sampling: fast iff passes per sample ≤ max_fast_passes and samples/s at the largest batch measured (up to "
        "256; 2-core CPU unless stated) ≥ min_fast_samples_per_s; the lecture's 'fast/slow' for flows matches either.",
        "lossy: yes iff the family has a latent code and a measured rate–distortion point (rate = KL bits/image); "
        "JPEG bits at the same MSE on the same images for reference.",
        "lossless: yes iff a real ANS bitstream of the test split was written and decoded bit-exactly (the first "
        "verify_images test images are decoded, 128 by default); coded bits/dim beside the model's NLL.",
    ]
    for (dataset, fam), models in family_rows.items():
        agreeing = [m for m, ok in models if ok]
        notes.append(f"lecture row '{fam}' ({dataset}): " + (f"reproduced by {', '.join(agreeing)} in every cell"
                     if agreeing else f"not reproduced by {', '.join(m for m, _ in models)}"))
    notes += [f"differs from the lecture — {m}" for m in mismatches]
    return write_table(pd.DataFrame(rows), out_dir, "matrix", notes=notes, tex=True)


@register_table("speed")
def speed_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows = []
    for (dataset, model), group in base_groups(runs).items():
        ss = _sections(group, "sampling")
        if not ss:
            continue
        s0 = ss[0]
        row = {"dataset": dataset, "model": model, "passes/sample": s0["passes_per_sample"],
               "samples/s (batch 1)": fmt_num(_mean(s.get("batch1_samples_per_s") for s in ss))}
        batch, _ = best_rate(s0)
        row["samples/s (largest batch)"] = (f"{fmt_num(_mean(s.get(f'batch{batch}_samples_per_s') for s in ss))} "
                                            f"(batch {batch})" if batch else MISSING)
        naive_batch, _ = best_rate(s0, "naive_")
        if naive_batch:
            row["naive samples/s (batch 1)"] = fmt_num(_mean(s.get("naive_batch1_samples_per_s") for s in ss))
            row["naive samples/s (largest batch)"] = (
                f"{fmt_num(_mean(s.get(f'naive_batch{naive_batch}_samples_per_s') for s in ss))} (batch {naive_batch})")
            ratio = [s[f"batch{naive_batch}_samples_per_s"] / s[f"naive_batch{naive_batch}_samples_per_s"] for s in ss
                     if s.get(f"batch{naive_batch}_samples_per_s") and s.get(f"naive_batch{naive_batch}_samples_per_s")]
            row["cached/naive speed-up"] = f"{_mean(ratio):.1f}× (batch {naive_batch})" if ratio else MISSING
            row["same samples as naive"] = "yes" if all(s.get("naive_matches_fast") for s in ss) else "NO"
        size = {k: [s.get("by_size", {}).get(k, {}) for s in ss] for k in ("8x8", "28x28")}
        r8 = _mean(e.get("batch1_samples_per_s") for e in size["8x8"])
        r28 = _mean(e.get("batch1_samples_per_s") for e in size["28x28"])
        row["passes 8×8 → 28×28"] = (f"{size['8x8'][0].get('passes_per_sample', MISSING)} → "
                                     f"{size['28x28'][0].get('passes_per_sample', MISSING)}")
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
def compression_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows = []
    baselines: dict[str, dict] = {}
    for (dataset, model), group in base_groups(runs).items():
        cs = _sections(group, "compression")
        if not cs:
            continue
        baselines.setdefault(dataset, cs[0])
        coded = cs[0].get("coded")
        rows.append({
            "dataset": dataset,
            "coder": f"{model} + ANS" if coded else model,
            "bits/dim": fmt_mean_sd([c.get("coded_bpd") for c in cs], 3) if coded else MISSING,
            "ideal −log₂p (bits/dim)": fmt_mean_sd([c.get("ideal_bpd") for c in cs], 3) if coded else MISSING,
            "model NLL (bits/dim)": fmt_mean_sd([c.get("model_nll_bpd") for c in cs], 3),
            "round trip": ("exact" if all(c.get("round_trip_exact") for c in cs) else "FAILED") if coded else MISSING,
            "notes": (cs[0].get("coder", "") if coded else cs[0].get("reason", "")) + (
                f"; z ≠ x at {fmt_pct(_mean(c['latent_changed_fraction'] for c in cs))} of values"
                if "latent_changed_fraction" in cs[0] else ""),
        })
    names = {"uniform": "uniform code, log₂ L", "gzip": "gzip -9", "lzma": "lzma (xz -9)", "png": "PNG (optimised)",
             "webp_lossless": "WebP lossless"}
    for dataset, c in baselines.items():
        for key, label in names.items():
            value = c.get("uniform_bpd") if key == "uniform" else c.get("baselines", {}).get(f"{key}_bpd")
            rows.append({"dataset": dataset, "coder": label, "bits/dim": fmt_num(value),
                         "ideal −log₂p (bits/dim)": MISSING, "model NLL (bits/dim)": MISSING,
                         "round trip": ({True: "exact", False: "FAILED"}.get(c.get("baselines_round_trip"), MISSING)
                                        if key != "uniform" else MISSING),
                         "notes": "no model" if key == "uniform" else c.get("baseline_storage", "")})
    notes = ["bits/dim = length of the stored bitstream (whole 32-bit words) / (test images × dims); all coders see "
             "the same test images, stored as their levels 0..L−1.",
             "Families without a coder: the reason is given; their NLL (or bound) is the ideal rate a suitable coder "
             "(bits-back, discrete flow) could approach."]
    return write_table(pd.DataFrame(rows), out_dir, "compression", notes=notes)


@register_table("rate_distortion")
def rate_distortion_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows = []
    jpeg: dict[str, list[dict]] = {}
    for (dataset, model), group in rate_distortion_groups(runs).items():
        ls = _sections(group, "lossy")
        jpeg.setdefault(dataset, ls[0].get("jpeg", []))
        mse = _mean(x["mse"] for x in ls)
        beta = ls[0].get("beta")
        rows.append({"dataset": dataset, "coder": model, "β": MISSING if beta is None else f"{beta:g}",
                     "rate (bits/image)": fmt_mean_sd([x["rate_bits_per_image"] for x in ls], 1),
                     "MSE (levels²)": fmt_mean_sd([x["mse"] for x in ls], 3),
                     "PSNR (dB)": fmt_mean_sd([x["psnr_db"] for x in ls], 1),
                     "JPEG bits/image at this MSE": fmt_num(jpeg_rate_at(ls[0].get("jpeg", []), mse))})
    for dataset, pts in jpeg.items():
        for p in pts:
            rows.append({"dataset": dataset, "coder": f"JPEG q={p['quality']}", "β": MISSING,
                         "rate (bits/image)": f"{p['bits_per_image']:.1f}", "MSE (levels²)": f"{p['mse']:.3f}",
                         "PSNR (dB)": f"{p['psnr_db']:.1f}", "JPEG bits/image at this MSE": MISSING})
    notes = ["Latent models: rate = KL(q(z|x) ‖ p(z)) in bits per image (the relative-entropy / bits-back rate, not a "
             "bitstream); distortion = MSE of the decoder mean at z = μ(x), in level units; PSNR = 10 log₁₀((L−1)²/MSE).",
             "JPEG: greyscale, the test images tiled into one mosaic (levels × 255/(L−1)), bits = file size / images."]
    return write_table(pd.DataFrame(rows), out_dir, "rate_distortion", notes=notes)


@register_table("stability")
def stability_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows = []
    for (dataset, model), group in base_groups(runs).items():
        s = seed_stability(group)
        sweep = lr_sweep(runs, dataset, model)
        verdict, _ = training_cell(group, lr_sens=lr_sensitivity(sweep))
        rises = [rise_fraction(r.get("training", {}).get("curve", {}).get("train_loss", [])) for r in group]
        rows.append({
            "dataset": dataset,
            "model": model,
            "final metric": s["metric"] or MISSING,
            "mean ± sd": fmt_mean_sd(s["values"], 3),
            "seed CV": fmt_pct(s["cv"]),
            "diverged": f"{s['num_diverged']}/{s['num_runs']}",
            "roughness": fmt_num(s["roughness"], 2),
            "loss rose in": fmt_pct(_mean(rises)),
            "lr sweep (×: metric)": ", ".join(f"×{m:g}: {fmt_num(v)}" for m, v in sweep.items()) if len(sweep) > 1 else MISSING,
            "lr sensitivity": fmt_pct(lr_sensitivity(sweep)),
            "verdict": verdict or MISSING,
        })
    notes = ["seed CV = sample sd / |mean| of the final metric over the runs that finished; roughness = mean |second "
             "difference| of the per-epoch training loss / its range (0 = straight, 2 = zig-zag by the range); 'loss rose in' = fraction of epochs whose "
             "training loss went up (a minimised loss rarely rises; an adversarial game's does).",
             "lr sensitivity = max relative change of the final metric at ×0.3 and ×3 the family's learning rate "
             "(config/lr_sweep.yaml, mean over its seeds) against ×1."]
    return write_table(pd.DataFrame(rows), out_dir, "stability", notes=notes)
