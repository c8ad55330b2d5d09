"""Figures in ``results/figures/``: sample grids per (dataset, model), and all of a dataset's grids side by side."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from . import register_table
from .matrix import base_groups  # the matrix's row order, base models only (no sweep variants)
from .plots import _save, plt, write_manifest  # the Agg backend and the one save routine of the figures

SAMPLES_FILE = "samples.png"  # the grid `dgmbench evaluate` writes into a run directory


def shown_sample_grids(runs: list) -> dict[tuple[str, str], object]:
    """(dataset, model) → the run whose ``samples.png`` the figures show: for each base model, its lowest seed
    that sampled (sweep variants' grids stay in their runs and MLflow). The committed copy of the inputs
    (tables/committed.py) keeps exactly these grids."""
    shown = {}
    for (dataset, model), group in base_groups(runs).items():
        for r in group:
            if (Path(r.dir) / SAMPLES_FILE).exists():
                shown[(dataset, model)] = r
                break
    return shown


@register_table("samples")
def sample_grids(runs: list, out_dir: Path) -> list[Path]:
    """``samples_{dataset}_{model}.png`` for each base model (:func:`shown_sample_grids`);
    ``samples_{dataset}.png``: those grids side by side in the matrix's row order, titled with the model and its
    test NLL (bits/dim) where it has one. Each PNG's manifest records the grids' SHA-1."""
    fdir = Path(out_dir) / "figures"
    fdir.mkdir(parents=True, exist_ok=True)
    written = []
    panels: dict[str, list[tuple[str, Path]]] = {}  # dataset → (title, grid)
    for (dataset, model), r in shown_sample_grids(runs).items():  # in the matrix's row order
        dst = fdir / f"samples_{dataset}_{model}.png"
        shutil.copyfile(Path(r.dir) / SAMPLES_FILE, dst)
        written += [dst, write_manifest(dst, {"copy_of": f"{dataset}/{model}/seed{r.info.seed}/{SAMPLES_FILE}",
                                              "sha1": _sha1(dst)})]
        lik = r.get("likelihood")
        nll = lik.nll_bpd if lik is not None else None
        panels.setdefault(dataset, []).append((model + (f"\n{nll:.3f} bits/dim" if nll is not None else ""), dst))
    for dataset, items in panels.items():
        written += side_by_side(items, fdir / f"samples_{dataset}.png", f"samples ({dataset})")
    return written


def _sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def side_by_side(items: list[tuple[str, Path]], path: Path, title: str) -> list[Path]:
    """One row of images with their titles (and the manifest: the titles and each image's SHA-1)."""
    fig, axes = plt.subplots(1, len(items), figsize=(2.2 * len(items), 2.6), squeeze=False)
    for ax, (label, png) in zip(axes[0], items):
        ax.imshow(plt.imread(png), cmap="gray")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, {"panels": [{"title": label, "sha1": _sha1(png)} for label, png in items]})
