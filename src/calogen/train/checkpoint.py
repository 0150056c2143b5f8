"""Atomic, code-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is a directory ``checkpoints/step-NNNNNNN/`` holding ``state.safetensors`` (model, EMA and
optimiser tensors) and ``state.json`` (step, history, optimiser hyper-parameters). It is written under a
temporary name and renamed into place; ``checkpoints/latest.json`` then points at it, so a run killed at
any instant (``kill -9`` included) resumes from the last complete checkpoint. Loading reads only tensors
and JSON: it can never execute code. Both JSON files are checked for shape and types when read, so a
damaged one is a one-line :class:`CheckpointError`, not a crash later in training.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from calogen.errors import CalogenError

__all__ = [
    "CheckpointError",
    "atomic_write_json",
    "atomic_write_tensors",
    "latest_checkpoint",
    "optimizer_from_flat",
    "optimizer_to_flat",
    "read_checkpoint",
    "write_checkpoint",
]


_NAME = re.compile(r"step-\d{8,}")


class CheckpointError(CalogenError):
    """A checkpoint or its ``latest.json`` pointer is damaged."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file and rename."""
    text = json.dumps(obj, indent=2, sort_keys=True)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def atomic_write_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor]) -> None:
    """Write a flat dict of tensors as safetensors via a temporary file and rename."""
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(flat, tmp))


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state dict into tensors (``opt.<param>.<name>``) and JSON (groups, scalars)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_flat`: load the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_checkpoint(run_dir: str | os.PathLike[str], step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], *, keep: int = 2) -> Path:
    """Write checkpoint ``step`` into ``run_dir/checkpoints`` and point ``latest.json`` at it.

    Args:
        run_dir: the model directory.
        step: optimiser steps taken.
        tensors: flat tensors to store.
        meta: JSON-serialisable state.
        keep: number of most recent checkpoints kept.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(root / "latest.json", {"step": step, "path": final.name})
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The directory of the newest complete checkpoint of ``run_dir``, or None if it has none.

    Raises:
        CheckpointError: ``latest.json`` is not ``{"step": N, "path": "step-NNNNNNNN"}`` or points at a
            missing checkpoint.
    """
    pointer = Path(run_dir) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    fix = f"repair it, or delete {pointer.parent} to train this run again from the start"
    try:
        data = json.loads(pointer.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{pointer} cannot be read ({exc}); {fix}") from None
    if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not _NAME.fullmatch(data["path"]) or not _is_int(data.get("step")):
        raise CheckpointError(f'{pointer} must be {{"step": N, "path": "step-NNNNNNNN"}}, got {str(data)[:80]}; {fix}')
    path = pointer.parent / data["path"]
    if not path.is_dir():
        raise CheckpointError(f"{pointer} points at {path.name}, which is missing; {fix}")
    return path


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_STATE_TYPES = {"step": _is_int, "bad_evals": _is_int, "best_val": _is_number, "wall_time_s": lambda v: _is_number(v) and math.isfinite(v),
                "stopped_early": lambda v: isinstance(v, bool), "preset": lambda v: isinstance(v, dict),
                "optimizer": lambda v: isinstance(v, dict) and isinstance(v.get("param_groups"), list) and isinstance(v.get("scalars"), dict)}  # fmt: skip
"""What ``state.json`` must hold, entry by entry (``best_val`` is inf before the first validation)."""


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON state of one checkpoint directory (``state.json`` checked against :data:`_STATE_TYPES`)."""
    path = Path(path)
    fix = "delete it to restart from the previous one"
    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except Exception as exc:  # OSError, ValueError, or safetensors' own error for a damaged file
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc}); {fix}") from None
    bad = sorted(k for k, ok in _STATE_TYPES.items() if not isinstance(meta, dict) or not ok(meta.get(k)))
    if bad:
        raise CheckpointError(f"checkpoint {path}: state.json lacks or has malformed {bad}; {fix}")
    return tensors, meta
