"""One training loop for every family. It knows nothing about the model (minGPT's trainer): it shuffles the
training split, calls ``model.train_step`` per batch, scores the validation split for early stopping, logs each
epoch to MLflow, and checkpoints so a killed job resumes where it stopped.

Outputs in ``out_dir``: ``config.yaml`` (resolved), ``checkpoint.pt`` (best model + record), ``last.pt``
(resume state), ``curve.csv`` (one row per epoch), ``samples.png`` (families that sample), ``mlflow_run_id``.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from . import checkpoint, clock, identity
from .build import build
from .config import RUN_KEYS, RunConfig, run_from_dict
from .distributions import nats_to_bits_per_dim
from .runtime import rng_state, seed_everything, set_rng_state
from .journal import open_tracker
from .tracking import epoch_metrics, flatten, run_tags

log = logging.getLogger("dgmbench.train")


class ResumeMismatch(RuntimeError):
    pass


def write_config(run: RunConfig, out_dir: Path) -> None:
    (out_dir / "config.yaml").write_text(yaml.safe_dump(run.to_dict(), sort_keys=False))


def read_config(run_dir: Path) -> RunConfig:
    from .config import ConfigError, read_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"no config.yaml in {run_dir}; is it a dgmbench run directory (dgmbench train --out DIR)?")
    return run_from_dict(read_yaml(path))


@torch.no_grad()
def validation_score(model, x: torch.Tensor, device, batch_size: int = 512) -> float | None:
    """Mean per-image validation score (lower is better), or None if the family defines none."""
    model.eval()
    scores = []
    for i in range(0, len(x), batch_size):
        s = model.validation_score(x[i : i + batch_size].to(device))
        if s is None:
            return None
        scores.append(s.double().cpu())
    return float(torch.cat(scores).mean())


def save_sample_grid(model, path: Path, num_samples: int = 64) -> None:
    model.eval()
    with torch.no_grad():
        x = model.sample(num_samples).float() / (model.info.num_levels - 1)  # (N, C, H, W) in [0, 1]
    scale = max(1, 64 // max(model.info.shape[1:]))  # make 8×8 digits legible
    if scale > 1:
        x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    write_image_grid(x.cpu(), path, nrow=8, padding=2, pad_value=0.5)


def write_image_grid(x: torch.Tensor, path: Path, nrow: int = 8, padding: int = 2, pad_value: float = 0.5) -> None:
    """Images (N, C, H, W) in [0, 1] as one PNG: rows of ``nrow``, ``padding`` pixels of ``pad_value`` around each,
    one channel shown as grey. The grid and the PNG ``torchvision.utils.save_image`` writes, pixel for pixel
    (tests/test_cost.py compares them), without importing torchvision: its ``ops`` import ``torch._dynamo``, ~1.5 s
    of every train job."""
    from PIL import Image

    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
    rows, cols = -(-n // nrow), min(nrow, n)
    grid = torch.full((x.shape[1], rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = r * (h + padding) + padding, col * (w + padding) + padding
        grid[:, top : top + h, left : left + w] = x[i]
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


def train(run: RunConfig, out_dir: Path, *, progress: bool | None = None, journal: bool = False,
          flops_cache: Path | None = None) -> dict:
    """Train one run (or resume it from ``out_dir/last.pt``); returns the training record. ``journal``: log to the
    run's MLflow journal for ``dgmbench track`` instead of the store (dgmbench/journal.py). ``flops_cache``: a
    directory whose FLOP count of this configuration's training step is reused (:func:`cached_train_step_flops`);
    None counts it."""
    out_dir = Path(out_dir)
    resume_path = out_dir / "last.pt"
    saved = checkpoint.load(resume_path, "resume") if resume_path.exists() else None
    if saved is not None and saved["config"] != run.to_dict():  # checked before anything is written or logged
        raise ResumeMismatch(
            f"{resume_path} was written with a different config; delete {out_dir} to start over, or rerun "
            "with the config it was trained with"
        )
    seed_everything(run.seed)
    dataset, model, device = build(run)  # unknown or missing data stops here, before out_dir exists
    out_dir.mkdir(parents=True, exist_ok=True)
    tc = run.train
    optimizers = model.configure_optimizers(tc)
    tracker = open_tracker(run.tracking_uri, run.experiment, journal=journal)  # live: fails here if unreachable
    identity.claim(run, out_dir)  # this run's directory, and only this process writes it
    run_id = tracker.start_run(out_dir, run.run_name, flatten(run.to_dict()), run_tags(run, model))

    x_train = dataset.train.x[: tc.num_train or None]
    x_val = dataset.val.x[: tc.num_val or None]
    shuffle = torch.Generator().manual_seed(run.seed)

    # Early-stopping and progress state; all of it goes into last.pt.
    state = {"epoch": 0, "best_val": math.inf, "best_epoch": 0, "bad_epochs": 0, "curve": [], "seconds": 0.0,
             "status": "ok", "diverged_epoch": None, "diverged_reason": None, "stopped_early": False,
             "cpu_seconds": 0.0, "steps": 0, "startup": None}
    best_state = copy.deepcopy(model.state_dict())
    if saved is not None:
        checkpoint.load_state(model, saved["model_state"], resume_path)
        for opt, s in zip(optimizers, saved["optimizer_states"]):
            opt.load_state_dict(s)
        best_state = saved["best_state"]
        state = saved["state"]
        for key in ("cpu_seconds", "steps", "startup"):  # a last.pt written before these were counted
            state.setdefault(key, None)
        set_rng_state(saved["rng"])
        shuffle.set_state(saved["shuffle_rng"])
        log.info("resuming %s from epoch %d", run.run_name, state["epoch"])
        tracker.set_tags(run_id, {"resumed_from_epoch": state["epoch"]})
    # Written only now: a run that stops on a mismatched last.pt or an unreachable tracker leaves the
    # config.yaml of what is already in out_dir untouched.
    write_config(run, out_dir)
    # Epochs a killed job logged after its last checkpoint are trained again on resume; MLflow already holds
    # them (the same values: training is deterministic), so log only the steps beyond what it has, keeping
    # one clean history per metric.
    logged_step = tracker.last_step(run_id, "wall_seconds")

    def save_resume():
        checkpoint.save(
            {"config": run.to_dict(), "model_state": model.state_dict(),
             "optimizer_states": [o.state_dict() for o in optimizers], "best_state": best_state,
             "state": state, "rng": rng_state(), "shuffle_rng": shuffle.get_state()},
            resume_path, "resume",
        )

    bar = tqdm(range(state["epoch"], tc.max_epochs), desc=run.run_name, unit="epoch",
               disable=(not progress) if progress is not None else None, leave=True)
    done = state["epoch"] >= tc.max_epochs or state["stopped_early"] or state["status"] != "ok"
    if not done:  # this process's start-up: from its start to its first batch
        state["startup"] = clock.startup_record()
    for epoch in ([] if done else bar):
        watch = clock.Stopwatch().start()  # the epoch's wall and CPU seconds, validation included
        model.train()
        sums: dict[str, float] = defaultdict(float)
        perm = torch.randperm(len(x_train), generator=shuffle)
        for i in range(0, len(x_train), tc.batch_size):
            xb = x_train[perm[i : i + tc.batch_size]].to(device)
            logs = model.train_step(xb, optimizers, tc)
            for k, v in logs.items():
                sums[k] += float(v) * len(xb)
        if state["steps"] is not None:
            state["steps"] += math.ceil(len(x_train) / tc.batch_size)
        row = {"epoch": epoch + 1, **{f"train_{k}": v / len(x_train) for k, v in sums.items()}}
        reason = None
        if not all(math.isfinite(v) for v in row.values()):
            reason = "non-finite training loss"
        reason = reason or model.check_diverged(row)
        val = None if reason else validation_score(model, x_val, device)
        if val is not None:
            row["val_nats"] = val
            if model.validation_is_nll:
                row["val_bpd"] = float(nats_to_bits_per_dim(val, dataset.info.num_dims))
            if not math.isfinite(val):
                reason = "non-finite validation score"
        watch.stop()
        state["seconds"] += watch.wall_seconds
        if state["cpu_seconds"] is not None:
            state["cpu_seconds"] += watch.cpu_seconds
        row["seconds"] = state["seconds"]
        state["curve"].append(row)
        state["epoch"] = epoch + 1
        if epoch + 1 > logged_step:
            tracker.log_metrics(run_id, epoch_metrics(row), step=epoch + 1)
        if reason:
            state.update(status="diverged", diverged_epoch=epoch + 1, diverged_reason=reason)
            log.warning("%s diverged at epoch %d: %s", run.run_name, epoch + 1, reason)
            break
        if val is None or val < state["best_val"]:
            state.update(best_val=val if val is not None else math.inf, best_epoch=epoch + 1, bad_epochs=0)
            best_state = copy.deepcopy(model.state_dict())
        else:
            state["bad_epochs"] += 1
        postfix = {k: f"{row[k]:.3f}" for k in ("train_loss", "val_nats") if k in row}
        bar.set_postfix(postfix)
        if bar.disable:  # no terminal (a Snakemake or SLURM log): one line per epoch instead of the bar
            print(f"{run.run_name}: epoch {epoch + 1}/{tc.max_epochs}", *(f"{k} {v}" for k, v in postfix.items()),
                  f"({state['seconds']:.0f} s)", file=sys.stderr, flush=True)
        if tc.patience and state["bad_epochs"] >= tc.patience:
            state["stopped_early"] = True
            break
        if tc.checkpoint_every and (epoch + 1) % tc.checkpoint_every == 0:
            save_resume()
    bar.close()
    save_resume()
    x_step = x_train[: tc.batch_size].to(device)
    flops = (cached_train_step_flops(run, model, x_step, flops_cache) if flops_cache is not None
             else train_step_flops(model, x_step, tc))

    model.load_state_dict(best_state)
    record = {
        "status": state["status"],
        "diverged_epoch": state["diverged_epoch"],
        "diverged_reason": state["diverged_reason"],
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "stopped_early": state["stopped_early"],
        "best_val_nats": state["best_val"] if math.isfinite(state["best_val"]) else None,
        "train_seconds": state["seconds"],
        # What the training cost, beside its wall seconds: CPU seconds move far less with the machine's load.
        "train_cpu_seconds": state["cpu_seconds"],
        "threads": clock.torch_threads(),
        "load_average": clock.load_average(),
        "machine": clock.machine(str(device)),
        "startup": state["startup"],
        "steps_run": state["steps"],
        "flops_per_step": flops,
        "curve": state["curve"],
    }
    checkpoint.save({"config": run.to_dict(), "model_state": best_state, "record": record}, out_dir / "checkpoint.pt", "model")
    write_curve(state["curve"], out_dir / "curve.csv")
    artifacts = [out_dir / "curve.csv", out_dir / "config.yaml"]
    if model.can_sample and state["status"] == "ok":
        seed_everything(run.seed)
        save_sample_grid(model, out_dir / "samples.png")
        artifacts.append(out_dir / "samples.png")
    for path in artifacts:
        tracker.log_artifact(run_id, path)
    tracker.set_tags(run_id, {"status": state["status"], "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
                              "stopped_early": state["stopped_early"]})  # counts and states, not measurements
    log.info("%s: %s after %d epochs (best %d) in %.1fs", run.run_name, state["status"], state["epoch"],
             state["best_epoch"], state["seconds"])
    return record


def train_step_flops(model, x: torch.Tensor, train_cfg) -> int | None:
    """FLOPs of one ``train_step`` on the batch ``x``, counted by torch's FlopCounterMode (matmuls, convolutions and
    attention, forward and backward; not element-wise ops or the optimizer's update). It steps a copy of the model
    with fresh optimisers and restores every RNG afterwards, so the run itself is unchanged. None, with a warning,
    if the counter fails on a family: a measurement must not lose a trained run."""
    from torch.utils.flop_counter import FlopCounterMode

    rng = rng_state()
    try:
        twin = copy.deepcopy(model).train()
        with FlopCounterMode(display=False) as counter:
            twin.train_step(x, twin.configure_optimizers(train_cfg), train_cfg)
        return int(counter.get_total_flops())
    except Exception as err:  # noqa: BLE001
        log.warning("could not count the FLOPs of a training step (%s: %s)", type(err).__name__, err)
        return None
    finally:
        set_rng_state(rng)


FLOPS_CACHE = ".flops"  # under a grid's runs_dir: `dgmbench train` caches there for the runs inside it


def cached_train_step_flops(run: RunConfig, model, x: torch.Tensor, cache_dir: Path) -> int | None:
    """:func:`train_step_flops`, counted once per configuration: the count depends on the family, its settings, the
    batch's shape and the code, not on the seed, so a grid's other seeds of a family read the first one's from
    ``cache_dir/<key>.json``. Counting is what imports ``torch._dynamo`` (FlopCounterMode is a TorchDispatchMode,
    whose dispatch torch fences off from ``torch.compile``): ~1.5 s a job, more than most runs' training loops on
    digits. The key hashes the run's config without its seed and placement (device type aside), the batch's shape
    and dtype, dgmbench's source and torch's version; a failed count is not cached."""
    import hashlib
    import json

    from .pending import source_hash, write_json

    config = {k: v for k, v in run.to_dict().items() if k != "seed" and k not in RUN_KEYS}
    text = json.dumps({"config": config, "batch": list(x.shape), "dtype": str(x.dtype), "device": x.device.type,
                       "source": source_hash(), "torch": torch.__version__}, sort_keys=True, default=str)
    spec = json.loads(text)  # as it reads back from a cache file
    path = Path(cache_dir) / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("spec") == spec and isinstance(cached.get("flops"), int):
            return cached["flops"]
    except (OSError, ValueError):
        pass  # not counted yet (or an unreadable entry): count it
    flops = train_step_flops(model, x, run.train)
    if flops is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json({"spec": spec, "flops": flops}, path)
        except OSError as err:  # a cache that cannot be written costs the next seed a count, nothing more
            log.warning("could not cache the FLOP count in %s (%s)", path, err)
    return flops


def write_curve(rows: list[dict], path: Path) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys or ["epoch"])
        w.writeheader()
        w.writerows(rows)


def summary_line(run: RunConfig, record: dict) -> str:
    """The one line that ends a training run: status, epochs run of the maximum (and why it stopped), the best
    validation score at its epoch, in nats per image and bits/dim where it is an NLL (the curve holds ``val_bpd``
    only for families whose ``validation_is_nll``), and the training time (summed over resumes)."""
    stop = (f" (diverged: {record['diverged_reason']})" if record["status"] == "diverged"
            else " (stopped early)" if record["stopped_early"] else "")
    head = f"{run.run_name}: {record['status']} after {record['epochs_run']}/{run.train.max_epochs} epochs{stop}"
    best = next((row for row in record["curve"] if row["epoch"] == record["best_epoch"]), None)
    if record["best_val_nats"] is not None and best is not None and "val_bpd" in best:
        score = (f"best validation NLL {best['val_nats']:.2f} nats = {best['val_bpd']:.3f} bits/dim "
                 f"(epoch {record['best_epoch']})")
    elif record["best_val_nats"] is not None:
        score = f"best validation score {record['best_val_nats']:.4g} (epoch {record['best_epoch']})"
    elif record["curve"] and "train_loss" in record["curve"][-1]:
        score = f"no validation score (final training loss {record['curve'][-1]['train_loss']:.4g})"
    else:
        score = "no validation score"
    return f"{head}, {score}, {record['train_seconds']:.1f} s training"
