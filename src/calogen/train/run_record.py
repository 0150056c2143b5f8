"""The record of a training run, ``run.json`` in its directory: what a resumed run must match.

It holds the SHA-256 of the training file, the geometry, the full preset, the number of batch shards
(:class:`~calogen.train.trainer.Trainer`; absent in runs of older versions) and, for a student, the
SHA-256 of its teacher's weights. ``train --resume`` refuses another training file, teacher or geometry, and an explicitly given preset that differs from the
stored one in anything but ``train.max_steps`` (which ``--max-steps`` may change).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.io import file_sha256
from calogen.outputs import atomic_path
from calogen.train.config import Preset

__all__ = ["RUN_FORMAT", "check_same_run", "read_run", "run_identity", "write_run"]

RUN_FORMAT = "calogen-train-run/1"


def _comparable(record: Any) -> dict[str, Any]:
    """A preset record as compared on resume: all but ``train.max_steps`` (which --max-steps may change)."""
    if not isinstance(record, dict):
        return {}
    record = json.loads(json.dumps(record))  # tuples become lists, as in the stored JSON
    sections = {k: v for k, v in record.items() if isinstance(v, dict)}
    return {**sections, "train": {k: v for k, v in sections.get("train", {}).items() if k != "max_steps"}}


def run_identity(data: str | os.PathLike[str], geometry: Geometry, preset: Preset, shards: int = 1) -> dict[str, Any]:
    """What a resumed run must match: the training file's bytes, the geometry, the preset and the batch shards."""
    return {"format": RUN_FORMAT, "data": str(data), "data_sha256": file_sha256(data), "geometry": geometry.name,
            "n_voxels": geometry.n_voxels, "preset": preset.to_dict(), "shards": shards}  # fmt: skip


def write_run(out: Path, identity: dict[str, Any]) -> None:
    """Write ``run.json`` into ``out`` atomically."""
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(identity, indent=1, sort_keys=True))


def read_run(out: Path) -> dict[str, Any] | None:
    """The stored record of ``out`` (None if it has none)."""
    path = out / "run.json"
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict) or stored.get("format") != RUN_FORMAT:
            raise ValueError("not a calogen training-run record")
    except (OSError, ValueError) as exc:
        raise CalogenError(f"{path} is damaged ({exc}); train into a new --out") from None
    return stored


def check_same_run(out: Path, stored: dict[str, Any], identity: dict[str, Any], given: Preset | None) -> None:
    """Refuse to resume ``out`` with another training file, geometry or (explicitly given) preset."""
    if stored.get("data_sha256") != identity["data_sha256"]:
        raise CalogenError(
            f"{out} was trained on {stored.get('data')} (sha256 {str(stored.get('data_sha256'))[:12]}...), but --data "
            f"{identity['data']} differs (sha256 {identity['data_sha256'][:12]}...); resume with the same file or train into a new --out"
        )
    if (stored.get("teacher") or {}).get("weights_sha256") != (identity.get("teacher") or {}).get("weights_sha256"):
        raise CalogenError(
            f"{out} was distilled from teacher {stored.get('teacher')}, not {identity.get('teacher')}; resume with the same "
            "--teacher (or none, if it had none) or train into a new --out"
        )
    if stored.get("geometry") != identity["geometry"] or stored.get("n_voxels") != identity["n_voxels"]:
        raise CalogenError(f"{out} was trained for geometry {stored.get('geometry')!r}, not {identity['geometry']!r}; pass that --geometry")
    old, wanted = _comparable(stored.get("preset")), _comparable(given.to_dict() if given is not None else None)
    if given is not None and old != wanted:
        keys = [
            f"{section}.{key}" for section in ("model", "train")
            for key in sorted(set(old.get(section, {})) | set(wanted[section]))
            if old.get(section, {}).get(key) != wanted[section].get(key)
        ]  # fmt: skip
        raise CalogenError(
            f"{out} was trained with another preset (it differs in {', '.join(keys) or 'its sections'}); resume without "
            "--preset (the stored one is used; --max-steps may change) or train into a new --out"
        )
