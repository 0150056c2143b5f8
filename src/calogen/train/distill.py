"""What a student run takes from its teacher: the architecture, the preprocessing and a record of which teacher.

``calogen train --teacher DIR --preset student-...`` trains a one-step student
(:mod:`calogen.models.students`) of the flow-matching model in ``DIR``: the student's networks are the
teacher's (channels, widths, depths; with a one-step energy stage the energy and radial networks are the
preset's), its objective and samplers come from the preset, it uses the
teacher's fitted preprocessing unchanged, and a resumed run must name the same teacher (the SHA-256 of
its weights is part of ``run.json``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.io import file_sha256
from calogen.models.generator import FlowModel, load
from calogen.models.students import STUDENT_OBJECTIVES
from calogen.train.config import Preset

__all__ = ["ONE_STEP_FIELDS", "STUDENT_FIELDS", "load_teacher", "student_preset", "teacher_record"]

STUDENT_FIELDS = ("objective", "sampler", "nfe", "energy_sampler", "energy_nfe")
"""Model settings a student takes from its preset; every other model setting comes from the teacher."""
ONE_STEP_FIELDS = ("energy_width", "energy_depth", "radial_width", "radial_depth")
"""Settings a student also takes from its preset when ``train.one_step_steps`` regresses its energy and radial
networks from scratch (:mod:`calogen.train.one_step`); a teacher without a radial network gives a student without one."""


def load_teacher(path: str | os.PathLike[str], geometry: Geometry) -> FlowModel:
    """The teacher model in ``path`` (EMA weights), checked to be a flow-matching model of ``geometry``."""
    teacher = load(path)
    if teacher.config.objective != "flow":
        raise CalogenError(f"--teacher {path} is a {teacher.config.objective!r} model; students distil flow-matching models")
    if teacher.geometry.name != geometry.name or teacher.geometry.n_voxels != geometry.n_voxels:
        raise CalogenError(f"--teacher {path} was trained for geometry {teacher.geometry.name!r}, not {geometry.name!r}")
    return teacher


def student_preset(preset: Preset, teacher: FlowModel) -> Preset:
    """``preset`` with the teacher's architecture and the preset's :data:`STUDENT_FIELDS`."""
    if preset.model.objective not in STUDENT_OBJECTIVES:
        raise CalogenError(
            f"--teacher needs a student preset (model.objective one of {sorted(STUDENT_OBJECTIVES)}, e.g. the built-in "
            f"student-consistency or student-average-velocity), got objective {preset.model.objective!r}"
        )
    fields = STUDENT_FIELDS + (ONE_STEP_FIELDS if preset.train.one_step_steps else ())
    own = {name: getattr(preset.model, name) for name in fields}
    if not teacher.config.radial_width:
        own["radial_width"] = 0
    return dataclasses.replace(preset, model=dataclasses.replace(teacher.config, **own))


def teacher_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Where the teacher is and the SHA-256 of its weights (stored in ``run.json`` and ``config.json``)."""
    return {"directory": str(path), "weights_sha256": file_sha256(Path(path) / "weights.safetensors")}
