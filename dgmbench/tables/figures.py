"""Figures in ``results/figures/``: sample grids per (dataset, model), and all of a dataset's grids side by side."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import register_table
from .matrix import base_groups  # the matrix's row order, base models only (no sweep variants)
from .plots import _save, plt  # the Agg backend and the one save routine of the figures


@register_table("samples")
def sample_grids(runs: list[dict], out_dir: Path) -> list[Path]:
    """``samples_{dataset}_{model}.png`` for each base model: the grid of the lowest seed that sampled;
    ``samples_{dataset}.png``: those grids side by side in the matrix's row order, titled with the model and its
    test NLL (bits/dim) where it has one."""
    fdir = Path(out_dir) / "figures"
    fdir.mkdir(parents=True, exist_ok=True)
    written = []
    panels: dict[str, list[tuple[str, Path]]] = {}  # dataset → (title, grid)
    for (dataset, model), group in base_groups(runs).items():  # sweep variants' grids stay in their runs and MLflow
        for r in group:
            src = Path(r.dir) / "samples.png"
            if src.exists():
                dst = fdir / f"samples_{dataset}_{model}.png"
                shutil.copyfile(src, dst)
                written.append(dst)
                lik = r.get("likelihood")
                nll = lik.nll_bpd if lik is not None else None
                panels.setdefault(dataset, []).append((model + (f"\n{nll:.3f} bits/dim" if nll is not None else ""), dst))
                break
    for dataset, items in panels.items():  # base_groups is in the matrix's row order
        written.append(side_by_side(items, fdir / f"samples_{dataset}.png", f"samples ({dataset})"))
    return written


def side_by_side(items: list[tuple[str, Path]], path: Path, title: str) -> Path:
    """One row of images with their titles."""
    fig, axes = plt.subplots(1, len(items), figsize=(2.2 * len(items), 2.6), squeeze=False)
    for ax, (label, png) in zip(axes[0], items):
        ax.imshow(plt.imread(png), cmap="gray")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
