"""Export never leaves a refused or half-written graph and never writes outside ``-o``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _faults import one_error_line

from calogen.models.preprocess import sigmoid
from calogen.serve.export import ExportError, export_onnx
from calogen.serve.triton_repo import RepositoryError, check_model_name, write_repository

NOISE = {"noise_shape": (8,)}


class OffsetInverse(torch.nn.Module):
    """``(sigmoid(x) - a) / a`` near ``x = logit(a)``, ``a = 1e-6``: the step of the inverse voxel transform that
    onnxruntime's ``Sigmoid`` (absolute error ~1.4e-7) gets 10% wrong."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn = fn

    def forward(self, energies: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return energies * (self.fn(-13.8 + 0.3 * noise) - 1e-6) / 1e-6


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_a_graph_that_fails_its_check_is_not_written(tmp_path: Path) -> None:
    energies = np.geomspace(1e3, 1e5, 6)
    with pytest.raises(ExportError, match="nothing was written"):
        export_onnx(OffsetInverse(torch.sigmoid), NOISE, tmp_path / "bad.onnx", check_energies=energies)
    with pytest.raises(ExportError, match="nothing was written"):
        write_repository(OffsetInverse(torch.sigmoid), NOISE, 8, tmp_path / "repo", name="bad", check_energies=energies)
    assert _files(tmp_path) == ["repo"]  # no graph, no model folder, no temporaries
    check = export_onnx(OffsetInverse(sigmoid), NOISE, tmp_path / "good.onnx", check_energies=energies)
    assert check is not None and check.max_rel_diff < 1e-5  # 1 / (1 + exp(-x)) is exact enough in both
    assert _files(tmp_path) == ["good.onnx", "repo"]


@pytest.mark.parametrize("name", ["../../evil", "a/b", "..", ".hidden", "", "x" * 129, "with space", "/abs"])
def test_model_names_that_are_not_plain_folder_names_are_refused(name: str) -> None:
    with pytest.raises(RepositoryError, match="not a plain folder name"):
        check_model_name(name)


def test_export_name_cannot_escape_the_repository(tiny_model: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "a" / "b" / "repo"
    status, err = cli("export", tiny_model, "--format", "triton", "-o", out, "--name", "../../evil")
    assert status == 2 and "not a plain folder name" in one_error_line(err, "export")
    assert _files(tmp_path) == []


def test_existing_model_folder_is_replaced_only_if_it_is_an_export(tiny_model: Path, tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    assert cli("export", tiny_model, "--format", "triton", "-o", repo, "--name", "m", "--nfe", "1", "--no-check")[0] == 0
    assert cli("export", tiny_model, "--format", "triton", "-o", repo, "--name", "m", "--nfe", "2", "--no-check")[0] == 0
    assert 'string_value: "2"' in (repo / "m" / "config.pbtxt").read_text()
    assert _files(repo) == ["m", "m/1", "m/1/model.onnx", "m/config.pbtxt"]  # no temporaries or old copies left
    (repo / "m" / "2").mkdir()  # a version the user added: not ours to delete
    status, err = cli("export", tiny_model, "--format", "triton", "-o", repo, "--name", "m")
    assert status == 2 and "not a model folder written by calogen export" in one_error_line(err, "export")
    assert (repo / "m" / "2").is_dir()
