"""Figures in ``results/figures/``: sample grids per (dataset, model)."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import group_runs, register_table


@register_table("samples")
def sample_grids(runs: list[dict], out_dir: Path) -> list[Path]:
    """``samples_{dataset}_{model}.png``: the grid of the lowest seed that sampled."""
    fdir = Path(out_dir) / "figures"
    fdir.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, model), group in group_runs(runs).items():
        for r in group:
            src = Path(r["_dir"]) / "samples.png"
            if src.exists():
                dst = fdir / f"samples_{dataset}_{model}.png"
                shutil.copyfile(src, dst)
                written.append(dst)
                break
    return written
