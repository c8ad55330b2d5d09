"""Figures in ``results/figures/`` from the per-run metrics (matplotlib, Agg backend, no display needed).

* ``nll_vs_speed_<dataset>.png`` — test NLL (bits/dim) against samples/s at the largest batch measured, one point per model
  (mean over seeds, bars = sd): the likelihood/speed trade-off of the matrix in one picture.
* ``training_curves_<dataset>.png`` — per-epoch training loss per model, mean over seeds with a ±sd band; each
  panel's axis says which loss it is (the family's ``loss_name``: the GAN's is its discriminator's).
* ``rate_distortion_<dataset>.png`` — PSNR against rate (bits/image) for the latent models (β variants) and JPEG.

Each ``<figure>.png`` has a ``<figure>.json`` beside it holding the numbers it plots and their SHA-1
(:func:`_save`). A PNG's bytes depend on the matplotlib version; the plotted data do not, so ``dgmbench tables
--check`` compares those (tables/committed.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from . import mean_sd, register_table  # noqa: E402
from .matrix import base_groups, rate_distortion_groups  # noqa: E402

SIGNIFICANT_DIGITS = 10  # plotted numbers are recorded to this precision: summation order cannot flip a hash


def _fig_dir(out_dir: Path) -> Path:
    d = Path(out_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def canonical(value):
    """``value`` (dicts, lists, tuples, numpy arrays and scalars) as plain JSON data, floats rounded to
    :data:`SIGNIFICANT_DIGITS` and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [canonical(v) for v in value]
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, str):
        return value if not isinstance(value, np.bool_) else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    v = float(value)
    return float(f"{v:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(v) else None


def data_sha1(data) -> str:
    """SHA-1 of the canonical JSON of ``data``: what a figure plots, independent of how it is drawn."""
    text = json.dumps(canonical(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()


def write_manifest(png: Path, data) -> Path:
    """``<figure>.json`` beside ``png``: the plotted data and their SHA-1 (what ``tables --check`` compares)."""
    path = Path(png).with_suffix(".json")
    record = {"figure": Path(png).name, "data_sha1": data_sha1(data), "data": canonical(data)}
    path.write_text(json.dumps(record, sort_keys=True, indent=1, ensure_ascii=False) + "\n")
    return path


def _save(fig, path: Path, data) -> list[Path]:
    """Save ``fig`` as ``path`` and the data it plots as its manifest; returns both paths."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path, write_manifest(path, data)]


def _by_dataset(groups: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for (dataset, model), g in groups.items():
        out.setdefault(dataset, {})[model] = g
    return out


# Candidate label offsets (points): rings of growing radius, eight directions each, up-right first. A label that
# cannot sit on the first ring gets a leader line to its point.
_RADII = (6, 10, 15, 22, 30, 40, 52)
_ANGLES = (45, -45, 135, -135, 0, 180, 90, -90)


def place_labels(ax, points: list[tuple[float, float]], labels: list[str], fontsize: float = 8) -> list:
    """Annotate each data point with its label where the label's box overlaps no other label, no point's marker
    and stays inside the axes: greedily, each label at the nearest free offset (rings of :data:`_RADII` points,
    :data:`_ANGLES` around each), with a leader line when it had to move off the first ring. Lays the figure out
    first (``tight_layout``), so the display positions hold when it is saved. Returns the annotations."""
    fig = ax.figure
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_px = ax.transData.transform
    pad = 4.0 * fig.dpi / 72  # a marker's half-size in pixels
    taken = []
    for x, y in points:
        px, py = to_px((x, y))
        taken.append(Bbox([[px - pad, py - pad], [px + pad, py + pad]]))
    placed = []
    # Crowded points first: they have the fewest free places.
    px = [to_px(p) for p in points]
    crowd = [sorted(math.dist(a, b) for b in px)[1] if len(px) > 1 else 0.0 for a in px]
    for i in sorted(range(len(points)), key=lambda i: (crowd[i], i)):
        best = None
        for radius in _RADII:
            for angle in _ANGLES:
                dx, dy = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
                ha = "left" if dx > 1e-9 else "right" if dx < -1e-9 else "center"
                va = "bottom" if dy > 1e-9 else "top" if dy < -1e-9 else "center"
                ann = ax.annotate(labels[i], points[i], xytext=(dx, dy), textcoords="offset points",
                                  fontsize=fontsize, ha=ha, va=va)
                box = ann.get_window_extent(renderer)
                ann.remove()
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(box.overlaps(t) for t in taken):
                    best = (dx, dy, ha, va, radius, box)
                    break
            if best:
                break
        if best is None:  # nowhere free: the first candidate, as before
            best = (_RADII[0], _RADII[0], "left", "bottom", _RADII[0], None)
        dx, dy, ha, va, radius, box = best
        leader = {"arrowstyle": "-", "color": "0.45", "lw": 0.6, "shrinkA": 0, "shrinkB": 3} if radius > _RADII[0] else None
        placed.append(ax.annotate(labels[i], points[i], xytext=(dx, dy), textcoords="offset points",
                                  fontsize=fontsize, ha=ha, va=va, arrowprops=leader))
        if box is not None:
            taken.append(box.expanded(1.05, 1.1))
    return placed


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
        ax.set_xscale("log")
        ax.set_xlabel("sampling speed at the largest batch measured (samples/s, log scale)")
        ax.set_ylabel("test NLL (bits/dim; upper bound for □)")
        ax.set_title(f"{dataset}: likelihood vs sampling speed\n● exact  □ bound (NLL ≤ value)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.margins(0.15)  # room for the labels inside the axes
        place_labels(ax, [(x, y) for _, _, (y, *_), (x, *_) in pts], [model for model, *_ in pts])
        data = {"x": "samples/s (mean, sd, seeds)", "y": "test NLL bits/dim (mean, sd, seeds)",
                "points": [{"model": m, "likelihood": k, "nll_bpd": nll, "samples_per_s": speed}
                           for m, k, nll, speed in pts]}
        written += _save(fig, _fig_dir(out_dir) / f"nll_vs_speed_{dataset}.png", data)
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
        trainings = {m: [r.results["training"] for r in g if "training" in r.results] for m, g in models.items()}
        trainings = {m: ts for m, ts in trainings.items() if ts and any(len(t.train_loss) for t in ts)}
        if not trainings:
            continue
        n = len(trainings)
        cols = min(3, n)
        rows = math.ceil(n / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.9 * rows), squeeze=False)
        panels = []
        for ax, (model, ts) in zip(axes.flat, trainings.items()):
            loss_name = " / ".join(dict.fromkeys(t.loss_name for t in ts))  # one name per family
            epochs, mean, sd = seed_band([t.train_loss for t in ts])
            if len(epochs) > 1:
                ax.plot(epochs, mean, color="C0", lw=1.2)
                ax.fill_between(epochs, mean - sd, mean + sd, color="C0", alpha=0.25, lw=0)
            else:  # one epoch (PCA's closed form): a line of one point draws nothing
                ax.errorbar(epochs, mean, yerr=sd, fmt="o", color="C0", capsize=3)
                ax.set_xlim(0.5, 1.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs are whole
            ax.set_title(f"{model} ({len(ts)} seed{'s' if len(ts) > 1 else ''})", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.set_ylabel(textwrap.fill(loss_name, 30), fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            panels.append({"model": model, "loss_name": loss_name, "seeds": len(ts), "epoch": epochs,
                           "mean": mean, "sd": sd})
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.suptitle(f"{dataset}: training loss per epoch (each panel's axis names its loss), mean ± sd over seeds",
                     fontsize=10)
        written += _save(fig, _fig_dir(out_dir) / f"training_curves_{dataset}.png", {"panels": panels})
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
        points = []
        for i, (model, ls) in enumerate(sorted(models.items(), key=lambda kv: kv[1][0].beta or 0)):
            x = mean_sd(p.rate_bits_per_image for p in ls)
            y = mean_sd(p.psnr_db for p in ls)
            beta = ls[0].beta
            ax.errorbar(x[0], y[0], xerr=x[1], yerr=y[1], fmt="o", color=f"C{i % 10}", capsize=3,
                        label=f"{model}" + (f" (β = {beta:g})" if beta is not None else ""))
            points.append({"model": model, "beta": beta, "rate_bits_per_image": x, "psnr_db": y})
        ax.set_xscale("log")
        ax.set_xlabel("rate (bits/image, log scale; latent models: KL in bits)")
        ax.set_ylabel("PSNR at z ~ q (dB)")
        ax.set_title(f"{dataset}: rate–distortion", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        data = {"jpeg": [{"quality": p.quality, "bits_per_image": p.bits_per_image, "psnr_db": p.psnr_db} for p in jpeg or []],
                "points": points}
        written += _save(fig, _fig_dir(out_dir) / f"rate_distortion_{dataset}.png", data)
    return written


@register_table("plots")
def all_plots(runs: list[dict], out_dir: Path) -> list[Path]:
    return nll_vs_speed(runs, out_dir) + training_curves(runs, out_dir) + rate_distortion(runs, out_dir)
