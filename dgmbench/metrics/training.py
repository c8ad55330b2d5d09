"""The training record as a typed result (evaluator ``training``): the per-epoch curve and its summary.

Nothing is recomputed: the checkpoint's training record (``ctx.record``) holds the curve the trainer wrote.
The stability measures over it (noise, rise fraction) live in :mod:`dgmbench.metrics.stability`, so the tables
apply one definition to every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import Result, register_evaluator
from .stability import curve_noise, rise_fraction


def _json_float(v) -> float | None:
    """A float for metrics.json: NaN/inf (and None) become None, so the file stays strict JSON."""
    return float(v) if v is not None and math.isfinite(float(v)) else None


@dataclass
class TrainingResult(Result):
    lr: float  # the Adam learning rate the run trained with
    epochs_run: int | None  # epochs trained
    best_epoch: int | None  # epoch of the best validation score (the checkpoint's weights)
    stopped_early: bool | None  # early stopping ended training before max_epochs
    loss_name: str  # what train_loss is (e.g. "−ELBO (nats/image)", "discriminator loss")
    final_train_loss: float | None  # last epoch's mean training loss, in loss_name's unit; None if not finite
    noise: float | None  # relative epoch-to-epoch noise of the loss's second half (stability.curve_noise)
    rise_fraction: float | None  # fraction of epochs whose training loss rose
    val_name: str  # what val_nats is ("validation NLL (nats/image)" or the family's own validation score)
    train_loss: list[float | None]  # per-epoch mean training loss (None where not finite)
    val_nats: list[float | None]  # per-epoch validation score


@register_evaluator("training", result=TrainingResult)
def evaluate_training(ctx, cfg) -> TrainingResult:
    curve = ctx.record.get("curve", [])
    loss = [row.get("train_loss") for row in curve]
    val = [row.get("val_nats") for row in curve]
    finite = [v for v in loss if v is not None and math.isfinite(v)]
    model = ctx.model
    return TrainingResult(
        lr=ctx.run.train.lr,
        epochs_run=ctx.record.get("epochs_run"),
        best_epoch=ctx.record.get("best_epoch"),
        stopped_early=ctx.record.get("stopped_early"),
        loss_name=model.loss_name,
        final_train_loss=finite[-1] if finite and math.isfinite(loss[-1]) else None,
        noise=_json_float(curve_noise(loss)),
        rise_fraction=_json_float(rise_fraction(loss)),
        val_name="validation NLL (nats/image)" if model.validation_is_nll else "validation score",
        train_loss=[_json_float(v) for v in loss],
        val_nats=[_json_float(v) for v in val],
    )
