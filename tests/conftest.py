"""Shared fixtures: paths to the official CaloChallenge binning files (reference data, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "calochallenge"

OFFICIAL_BINNINGS = {
    "ds1-photons": ("binning_dataset_1_photons.xml", "photon"),
    "ds1-pions": ("binning_dataset_1_pions.xml", "pion"),
    "ds2": ("binning_dataset_2.xml", "electron"),
    "ds3": ("binning_dataset_3.xml", "electron"),
}


@pytest.fixture
def official_binning():
    """Return ``(path, particle)`` of the official binning file for a built-in geometry name."""

    def get(name: str) -> tuple[Path, str]:
        filename, particle = OFFICIAL_BINNINGS[name]
        path = SHARED / filename
        if not path.is_file():
            pytest.skip(f"official binning {path} not available")
        return path, particle

    return get
