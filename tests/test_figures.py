"""The figures say what they plot: labels that do not cover each other, each curve's loss on its axis, whole
epochs, a unit on every axis, and no empty panel."""

from __future__ import annotations

import itertools
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from dgmbench.models import MODELS
from dgmbench.tables import load_runs, plots


def text_box(ann, renderer):
    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)  # the label alone, without its leader line


def test_labels_overlap_neither_each_other_nor_any_point():
    """Near-coincident points (vae and hvae on one spot, as on digits) get labels whose boxes are disjoint, clear of
    every marker and inside the axes; a label moved off its point's first ring has a leader line."""
    rng = np.random.default_rng(0)
    cluster = [(1.2e4 * (1 + 0.01 * rng.standard_normal()), 2.12 + 0.002 * rng.standard_normal()) for _ in range(4)]
    points = cluster + [(45, 1.84), (400, 1.83), (150, 1.97), (2100, 2.11)]
    labels = ["vae", "hvae", "vae-β4", "hvae-β4", "diffusion", "arm", "idf", "flow"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(*zip(*points), "o")
    ax.set_xscale("log")
    ax.margins(0.15)
    anns = plots.place_labels(ax, points, labels)
    renderer = fig.canvas.get_renderer()
    boxes = [text_box(a, renderer) for a in anns]
    assert [a.get_text() for a in anns] and sorted(a.get_text() for a in anns) == sorted(labels)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    frame = ax.get_window_extent(renderer)
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        for x, y in points:
            px, py = ax.transData.transform((x, y))
            assert not (box.x0 < px < box.x1 and box.y0 < py < box.y1)  # no label covers a point
    for ann, box in zip(anns, boxes):
        px, py = ax.transData.transform(ann.xy)
        far = math.dist((px, py), (min(max(px, box.x0), box.x1), min(max(py, box.y0), box.y1))) > 8 * fig.dpi / 72
        assert (ann.arrow_patch is not None) or not far  # a distant label is tied to its point
    plt.close(fig)


@pytest.fixture(scope="module")
def figures(tiny_runs, tmp_path_factory):
    """name → the Figure each plot builder saved from the tiny runs (captured before it is closed)."""
    captured = {}
    save = plots._save

    def capture(fig, path, data):
        captured[path.name] = fig
        written = save(fig, path, data)
        FigureCanvasAgg(fig)  # closing it left a bare canvas; this one can measure text again
        return written

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "_save", capture)
    try:
        plots.all_plots(load_runs(tiny_runs), tmp_path_factory.mktemp("figures"))
    finally:
        mp.undo()
    return captured


def visible(line) -> bool:
    """A line draws something: a segment between two finite points, or a marker on one."""
    finite = np.isfinite(np.asarray(line.get_ydata(), float)).sum()
    has_marker = line.get_marker() not in (None, "", "None", " ")
    return (finite >= 2 and line.get_linestyle() not in ("None", "", " ")) or (finite >= 1 and has_marker)


def _axes(fig):
    return [ax for ax in fig.axes if ax.axison]


def test_every_axis_has_a_unit(figures):
    assert {"nll_vs_speed_digits.png", "training_curves_digits.png", "rate_distortion_digits.png"} <= set(figures)
    for name, fig in figures.items():
        for ax in _axes(fig):
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert label == "epoch" or ("(" in label and ")" in label), (name, label)


def test_training_curves_name_their_loss_show_whole_epochs_and_no_panel_is_empty(figures):
    fig = figures["training_curves_digits.png"]
    panels = {ax.get_title().split(" ")[0]: ax for ax in _axes(fig)}
    assert set(panels) == {"vae", "hvae", "gan", "pca"}
    fig.canvas.draw()
    for model, ax in panels.items():
        assert ax.get_ylabel().replace("\n", " ") == MODELS.get(model).loss_name  # the loss it plots
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (model, ticks)
        assert any(visible(line) for line in ax.get_lines()), model  # PCA's one epoch too
    assert "discriminator" in panels["gan"].get_ylabel()


def test_nll_vs_speed_labels_apart(figures):
    fig = figures["nll_vs_speed_digits.png"]
    ax = _axes(fig)[0]
    renderer = fig.canvas.get_renderer()
    anns = {a.get_text(): text_box(a, renderer) for a in ax.texts}
    assert {"vae", "hvae"} <= set(anns)
    assert not anns["vae"].overlaps(anns["hvae"])
