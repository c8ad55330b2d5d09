"""``results/tables/likelihood.{csv,md}``: test NLL of every likelihood family on one discrete scale."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import fmt_mean_sd, group_runs, register_table, write_table

# Reference values on the same split and scale, with their source (STYLE.md: the reference beside the result).
REFERENCES = {
    ("digits", "arm"): (86.3, "intro_dgm ARM, exact −log p, this test split"),
    ("digits", "vae"): (96.4, "intro_dgm VAE, single-sample −ELBO, this test split"),
    ("digits", "hvae"): (96.2, "intro_dgm hierarchical VAE, single-sample −ELBO, this test split"),
}


def test_images(lik: dict) -> str:
    """"447" when the whole test split was scored, "1000 of 10000" for a fixed subset (eval.likelihood.max_images)."""
    n, split = lik.get("num_test"), lik.get("num_test_split", lik.get("num_test"))
    return "—" if n is None else str(n) if n == split else f"{n} of {split}"


@register_table("likelihood")
def likelihood_table(runs: list[dict], out_dir: Path) -> list[Path]:
    rows = []
    for (dataset, model), group in group_runs(runs).items():
        lik = [r.get("likelihood", {}) for r in group]
        if not lik or lik[0].get("type", "none") == "none":
            continue
        ok = [r for r in group if r["run"]["status"] == "ok"]
        okl = [r["likelihood"] for r in ok]
        ref = REFERENCES.get((dataset, model))
        row = {
            "dataset": dataset,
            "model": model,
            "family": group[0]["run"]["family"],
            "likelihood": lik[0]["type"],
            "estimator": lik[0]["estimator"],
            "levels": lik[0]["num_levels"],
            "NLL (nats/image)": fmt_mean_sd([x["nll_nats"] for x in okl]),
            "NLL (bits/dim)": fmt_mean_sd([x["nll_bpd"] for x in okl], 3),
            "estimator s.e. (nats)": fmt_mean_sd([x.get("stderr_nats", 0.0) for x in okl], 3),
            "bound (nats/image)": fmt_mean_sd([x["bound_nats"] for x in okl]) if "bound_nats" in okl[0] else "—" if okl else "—",
            "seeds ok": f"{len(ok)}/{len(group)}",
            "test images": test_images(lik[0]),
            "reference (nats/image)": f"{ref[0]} ({ref[1]})" if ref else "—",
        }
        rows.append(row)
    notes = [
        "Every NLL is on the data's own discrete levels (17 for digits, 256 for 8-bit images), on the test split; "
        "bits/dim = nats / (D ln 2). Exact families give −log p(x); bound families give −(lower bound) ≥ −log p(x).",
        "mean ± sd over seeds (sample sd); diverged runs are excluded from the mean and counted in 'seeds ok'.",
        "test images: how many test images were scored; 'n of N' is a fixed random subset, the same for every "
        "model and seed of the dataset (eval.likelihood.max_images).",
        "estimator s.e.: standard error of the IWAE estimate over independent repeats (0 for exact and deterministic values).",
    ]
    return write_table(pd.DataFrame(rows), out_dir, "likelihood", notes=notes, tex=True)
