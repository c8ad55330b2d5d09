"""The training record as a typed result (evaluator ``training``): the per-epoch curve and its summary, and what
the training cost (FLOPs per step, wall and CPU seconds, start-up).

Nothing is recomputed: the checkpoint's training record (``ctx.record``) holds the curve the trainer wrote.
The stability measures over it (noise, rise fraction) live in :mod:`dgmbench.metrics.stability`, so the tables
apply one definition to every run. Fields added after the first metrics.json files were written have defaults
(None: not measured), so those files still parse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import Result, register_evaluator
from .stability import curve_noise, rise_fraction
from .timing import Timing, TrainingTiming


VAL_NLL = "validation NLL (nats/image)"  # val_name of families whose validation score is their NLL (or bound)


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
    val_bpd: list[float | None] | None = None  # per-epoch validation NLL in bits/dim (None: the score is not an NLL)
    batch_size: int | None = None  # images per training step
    steps_run: int | None = None  # training steps taken (train_step calls), over every resumed process
    flops_per_step: int | None = None  # FLOPs of one train_step on one batch of batch_size, counted by
    # torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, attention; forward and backward; not
    # element-wise ops or the optimizer); None: not measured
    timing: TrainingTiming | None = None  # wall and CPU seconds, start-up, per-epoch times (differs between reruns)

    def best_val_bpd_within(self, fraction: float, num_dims: int | None = None) -> float | None:
        """The best (lowest) validation NLL in bits/dim over the first ``ceil(fraction × epochs_run)`` epochs: what
        the checkpoint would have scored had the budget been that fraction of the epochs (no schedule depends on
        the budget). Results written before ``val_bpd`` existed convert ``val_nats`` with ``num_dims`` (D).
        None when the score is not an NLL or no epoch in that range has one."""
        bpd = self.val_bpd
        if bpd is None and self.val_name == VAL_NLL and num_dims:
            bpd = [None if v is None else v / (num_dims * math.log(2)) for v in self.val_nats]
        if not bpd:
            return None
        k = max(1, math.ceil(fraction * len(bpd) - 1e-9))
        vals = [v for v in bpd[:k] if v is not None]
        return min(vals) if vals else None


@register_evaluator("training", result=TrainingResult)
def evaluate_training(ctx, cfg) -> TrainingResult:
    curve = ctx.record.get("curve", [])
    loss = [row.get("train_loss") for row in curve]
    val = [row.get("val_nats") for row in curve]
    finite = [v for v in loss if v is not None and math.isfinite(v)]
    model = ctx.model
    rec = ctx.record
    timing = None
    if "train_cpu_seconds" in rec:  # records written before CPU seconds were recorded: not measured
        timing = TrainingTiming(
            training=Timing(wall_seconds=rec.get("train_seconds"), cpu_seconds=rec["train_cpu_seconds"],
                            threads=rec.get("threads"), load_average=rec.get("load_average")),
            startup=Timing.from_dict(rec["startup"], where="startup") if rec.get("startup") else None,
            epoch_seconds=[float(row["seconds"]) for row in curve if "seconds" in row],
            machine=rec.get("machine"),
        )
    return TrainingResult(
        lr=ctx.run.train.lr,
        epochs_run=ctx.record.get("epochs_run"),
        best_epoch=ctx.record.get("best_epoch"),
        stopped_early=ctx.record.get("stopped_early"),
        loss_name=model.loss_name,
        final_train_loss=finite[-1] if finite and math.isfinite(loss[-1]) else None,
        noise=_json_float(curve_noise(loss)),
        rise_fraction=_json_float(rise_fraction(loss)),
        val_name=VAL_NLL if model.validation_is_nll else "validation score",
        train_loss=[_json_float(v) for v in loss],
        val_nats=[_json_float(v) for v in val],
        val_bpd=[_json_float(row.get("val_bpd")) for row in curve] if model.validation_is_nll else None,
        batch_size=ctx.run.train.batch_size,
        steps_run=rec.get("steps_run"),
        flops_per_step=rec.get("flops_per_step"),
        timing=timing,
    )
