"""``results/tables/likelihood.{csv,md,tex}``: test NLL of every likelihood family on one discrete scale, with two
model-free baselines per dataset and the published references beside the dgmbench number of the same estimator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..distributions import nats_to_bits_per_dim
from . import NOT_MEASURED, fmt_mean_sd, fmt_stderr, group_runs, mean_sd, register_table, results, write_table


@dataclass(frozen=True)
class Reference:
    value_nats: float  # nats/image on this test split and scale
    estimator: str  # how the reference was computed: "exact" or "ELBO" (single-sample −ELBO)
    source: str


# Reference values on the same split and scale, with their estimator and source (STYLE.md: the reference beside
# the result). Each sits beside dgmbench's number of the *same* estimator.
REFERENCES = {
    ("digits", "arm"): Reference(86.3, "exact", "intro_dgm ARM, exact −log p, this test split"),
    ("digits", "vae"): Reference(96.4, "ELBO", "intro_dgm VAE, single-sample −ELBO, this test split"),
    ("digits", "hvae"): Reference(96.2, "ELBO", "intro_dgm hierarchical VAE, single-sample −ELBO, this test split"),
}


def ours_like_for_like(ref: Reference, liks: list) -> list[float]:
    """dgmbench's numbers (one per seed) computed with the reference's estimator: the NLL for an exact reference,
    the family's own bound (−ELBO) for an ELBO reference."""
    if ref.estimator == "exact":
        return [x.nll_nats for x in liks if x.type == "exact"]
    return [x.bound_nats if x.bound_estimator == ref.estimator else x.nll_nats for x in liks
            if ref.estimator in (x.bound_estimator, x.estimator)]


def finite(v) -> bool:
    return v is not None and math.isfinite(v)


@register_table("likelihood")
def likelihood_table(runs: list, out_dir: Path) -> list[Path]:
    rows, baselines = [], {}
    for (dataset, model), group in group_runs(runs).items():
        liks = results(group, "likelihood")
        if liks:
            baselines.setdefault(dataset, (liks[0], next(r.subset for r in group if "likelihood" in r.results)))
        if not liks or liks[0].type == "none":
            continue
        # A seed counts only if it trained without diverging and its number is finite; the others are failed.
        okl = [r.results["likelihood"] for r in group
               if r.info.status == "ok" and "likelihood" in r.results and finite(r.results["likelihood"].nll_nats)]
        first = liks[0]
        nll = mean_sd(x.nll_nats for x in okl)[0]
        hist = mean_sd(x.histogram_nll_nats for x in liks)[0]
        ref = REFERENCES.get((dataset, model))
        same = ours_like_for_like(ref, okl) if ref else []
        rows.append({
            "dataset": dataset,
            "model": model,
            "family": group[0].info.family,
            "likelihood": first.type,
            "estimator": first.estimator,
            "levels": first.num_levels,
            "NLL (nats/image)": fmt_mean_sd([x.nll_nats for x in okl]),
            "NLL (bits/dim)": fmt_mean_sd([x.nll_bpd for x in okl], 3),
            "estimator s.e. (nats)": fmt_stderr([x.stderr_nats for x in okl]),
            "repeats": first.repeats,
            "s.e. from": first.stderr_method or "—",
            "s.e. over images (nats)": fmt_stderr([x.sem_images_nats for x in okl], 2),
            "family's own bound (nats/image)": (f"{fmt_mean_sd([x.bound_nats for x in okl])} ({first.bound_estimator}, "
                                                f"s.e. {fmt_stderr([x.bound_stderr_nats for x in okl])})"
                                                if first.bound_estimator else "—"),
            "vs histogram": ("worse than the per-pixel histogram" if finite(nll) and nll > hist
                             else f"{hist - nll:.1f} nats better" if finite(nll) else NOT_MEASURED),
            "seeds ok": f"{len(okl)}/{len(group)}",
            "test images": group[0].subset.label,
            "reference (nats/image)": (f"{ref.value_nats} ({ref.source}); dgmbench {ref.estimator}: "
                                       f"{fmt_mean_sd(same)}" if ref else "—"),
        })
    for dataset, (lik, subset) in sorted(baselines.items()):
        D = lik.num_dims
        for name, value, what in (("uniform", lik.uniform_nll_nats, f"uniform over the {lik.num_levels} levels"),
                                  ("per-pixel histogram", lik.histogram_nll_nats,
                                   "independent per-pixel categoricals of the training split, add-one smoothing")):
            rows.append({"dataset": dataset, "model": name, "family": "baseline (no model)", "likelihood": "exact",
                         "estimator": what, "levels": lik.num_levels, "NLL (nats/image)": f"{value:.2f}",
                         "NLL (bits/dim)": f"{nats_to_bits_per_dim(value, D):.3f}",
                         "estimator s.e. (nats)": "0 (deterministic)", "repeats": 1, "s.e. from": "deterministic",
                         "s.e. over images (nats)": "—", "family's own bound (nats/image)": "—", "vs histogram": "—",
                         "seeds ok": "—", "test images": subset.label, "reference (nats/image)": "—"})
    notes = [
        "Every NLL is on the data's own discrete levels (17 for digits, 256 for 8-bit images), on the same fixed test "
        "images for every model and seed (metrics.json test_subset); bits/dim = nats / (D ln 2). Exact families give "
        "−log p(x); bound families give −(lower bound) ≥ −log p(x), the tightest they measured ('estimator').",
        "mean ± sd over seeds (sample sd); a seed that diverged or whose NLL is not finite counts as failed in "
        "'seeds ok' and is left out of the mean.",
        "estimator s.e.: the standard error of the mean NLL from the estimator's own randomness, "
        "√(mean_i s_i² / (N R)) over R independent repeats (s_i² the per-image variance across repeats), or, for one "
        "draw of an importance-weighted estimate, √(Σ_i var_i) / N with var_i the delete-one jackknife variance over "
        "its k samples ('s.e. from'); exact likelihoods are deterministic. s.e. over images: the standard error of "
        "the mean over the N test images.",
        "family's own bound: the single-sample bound (e.g. −ELBO) beside a tighter importance-weighted estimate.",
        "Baselines without a model, on the same test images: uniform = D ln L; per-pixel histogram = independent "
        "categoricals counted on the whole training split (add-one smoothing), which can be more images than a grid's "
        "`num_train` gives the models (the 28×28 grid trains on 2,000). 'vs histogram' flags a family that learnt "
        "less than the histogram.",
        "reference: the published value with its estimator and source, and dgmbench's number with the same "
        "estimator (ELBO beside ELBO, exact beside exact).",
    ]
    return write_table(pd.DataFrame(rows), out_dir, "likelihood", notes=notes, tex=True)
