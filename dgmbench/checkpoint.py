"""Checkpoints are dicts of state_dicts, tensors and plain data plus the resolved config — never pickled
modules — written atomically and loaded with ``torch.load(weights_only=True)`` only.

* ``checkpoint.pt`` — the trained model (best validation state), its resolved config and training record;
  what ``dgmbench evaluate`` reads.
* ``last.pt`` — everything needed to resume training exactly (model, optimisers, RNG states, epoch,
  early-stopping state, curve so far); written every ``checkpoint_every`` epochs and kept after training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

FORMAT = "dgmbench"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, or not a dgmbench checkpoint; the message says what to do."""


def save(obj: dict[str, Any], path: Path, kind: str) -> None:
    """Write atomically (temp file + rename): a job killed mid-write leaves the previous file intact."""
    payload = {"format": FORMAT, "kind": kind, "version": VERSION, **obj}
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # a full disk surfaces from torch's zip writer as a RuntimeError
        tmp.unlink(missing_ok=True)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"could not write {path} ({first}); the disk may be full or read-only: free space (or fix the "
            f"permissions) and rerun — the previous {path.name}, if any, is intact"
        ) from None


def load(path: Path, kind: str) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train the run first (dgmbench train ... --out {path.parent})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle with disallowed globals, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable dgmbench checkpoint ({first[:200]}); it may be truncated or foreign: "
            f"delete it and retrain the run"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("kind") != kind:
        raise CheckpointError(f"{path} is not a dgmbench {kind} checkpoint; delete it and retrain the run")
    if obj.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {obj.get('version')}, this dgmbench reads {VERSION}; retrain")
    return obj


def load_state(model: torch.nn.Module, state: dict[str, Any], path: Path) -> None:
    """``model.load_state_dict(state)``, refusing a checkpoint written for another architecture with a
    :class:`CheckpointError` (torch raises a ``RuntimeError`` listing every mismatched tensor)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"{path} does not fit the model its config names ({first}); it was written by another model or "
            f"settings: delete it and retrain the run"
        ) from None
