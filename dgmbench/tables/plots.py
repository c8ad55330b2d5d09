"""Figures in ``results/figures/`` from the per-run metrics (matplotlib, Agg backend, no display needed).

* ``nll_vs_speed_<dataset>.png`` — test NLL (bits/dim) against samples/s at the largest batch measured, one point per model
  (mean over seeds, bars = sd): the likelihood/speed trade-off of the matrix in one picture.
* ``training_curves_<dataset>.png`` — per-epoch training loss per model, mean over seeds with a ±sd band.
* ``rate_distortion_<dataset>.png`` — PSNR against rate (bits/image) for the latent models (β variants) and JPEG.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import mean_sd, register_table  # noqa: E402
from .matrix import base_groups, rate_distortion_groups  # noqa: E402


def _fig_dir(out_dir: Path) -> Path:
    d = Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _by_dataset(groups: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for (dataset, model), g in groups.items():
        out.setdefault(dataset, {})[model] = g
    return out


def nll_vs_speed(runs: list[dict], out_dir: Path) -> list[Path]:
    written = []
    for dataset, models in _by_dataset(base_groups(runs)).items():
        pts = []
        for model, group in models.items():
            ok = [r for r in group if r.info.status == "ok" and "likelihood" in r.results and "sampling" in r.results]
            nll = mean_sd(r.results["likelihood"].nll_bpd for r in ok)
            speed = mean_sd(r.results["sampling"].best()[1] for r in ok)
            if nll[2] and speed[2]:
                pts.append((model, ok[0].results["likelihood"].type, nll, speed))
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for model, kind, (y, ysd, _), (x, xsd, _) in pts:
            ax.errorbar(x, y, xerr=xsd, yerr=ysd, fmt="o" if kind == "exact" else "s",
                        mfc="C0" if kind == "exact" else "none", color="C0" if kind == "exact" else "C1", capsize=3)
            ax.annotate(model, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("samples/s at the largest batch measured (log scale)")
        ax.set_ylabel("test NLL (bits/dim; upper bound for □)")
        ax.set_title(f"{dataset}: likelihood vs sampling speed\n● exact  □ bound (NLL ≤ value)", fontsize=9)
        ax.grid(alpha=0.3)
        written.append(_save(fig, _fig_dir(out_dir) / f"nll_vs_speed_{dataset}.png"))
    return written


def seed_band(curves: list[list[float | None]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs 1..T, the mean and the sd over the seeds still running at each epoch (curves of unequal length)."""
    T = max((len(c) for c in curves), default=0)
    arr = np.full((len(curves), T), np.nan)
    for i, c in enumerate(curves):
        arr[i, : len(c)] = [np.nan if v is None else v for v in c]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs give NaN, which matplotlib skips
            mean = np.nanmean(arr, 0)
            sd = np.nan_to_num(np.nanstd(arr, 0, ddof=0))
    return np.arange(1, T + 1), mean, sd


def training_curves(runs: list[dict], out_dir: Path) -> list[Path]:
    written = []
    for dataset, models in _by_dataset(base_groups(runs)).items():
        curves = {m: [r.results["training"].train_loss for r in g if "training" in r.results] for m, g in models.items()}
        curves = {m: c for m, c in curves.items() if c and any(len(x) for x in c)}
        if not curves:
            continue
        n = len(curves)
        cols = min(3, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
        for ax, (model, cs) in zip(axes.flat, curves.items()):
            epochs, mean, sd = seed_band(cs)
            ax.plot(epochs, mean, color="C0", lw=1.2)
            ax.fill_between(epochs, mean - sd, mean + sd, color="C0", alpha=0.25, lw=0)
            ax.set_title(f"{model} ({len(cs)} seed{'s' if len(cs) > 1 else ''})", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.set_ylabel("training loss", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.suptitle(f"{dataset}: training loss, mean ± sd over seeds", fontsize=10)
        written.append(_save(fig, _fig_dir(out_dir) / f"training_curves_{dataset}.png"))
    return written


def rate_distortion(runs: list[dict], out_dir: Path) -> list[Path]:
    written = []
    by_ds: dict[str, dict[str, list[dict]]] = {}
    for (dataset, model), group in rate_distortion_groups(runs).items():
        by_ds.setdefault(dataset, {})[model] = [r.results["lossy"] for r in group]
    for dataset, models in by_ds.items():
        fig, ax = plt.subplots(figsize=(5.5, 4))
        jpeg = next(iter(models.values()))[0].jpeg
        if jpeg:
            ax.plot([p.bits_per_image for p in jpeg], [p.psnr_db for p in jpeg], "k.-",
                    label=f"JPEG (q = {jpeg[0].quality}..{jpeg[-1].quality})")
        for i, (model, ls) in enumerate(sorted(models.items(), key=lambda kv: kv[1][0].beta or 0)):
            x = mean_sd(p.rate_bits_per_image for p in ls)
            y = mean_sd(p.psnr_db for p in ls)
            beta = ls[0].beta
            ax.errorbar(x[0], y[0], xerr=x[1], yerr=y[1], fmt="o", color=f"C{i % 10}", capsize=3,
                        label=f"{model}" + (f" (β = {beta:g})" if beta is not None else ""))
        ax.set_xscale("log")
        ax.set_xlabel("rate (bits/image; latent models: KL in bits)")
        ax.set_ylabel("PSNR at z ~ q (dB)")
        ax.set_title(f"{dataset}: rate–distortion", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, _fig_dir(out_dir) / f"rate_distortion_{dataset}.png"))
    return written


@register_table("plots")
def all_plots(runs: list[dict], out_dir: Path) -> list[Path]:
    return nll_vs_speed(runs, out_dir) + training_curves(runs, out_dir) + rate_distortion(runs, out_dir)
