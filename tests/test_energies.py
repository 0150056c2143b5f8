"""Energy specifications: units, kinds, reproducibility and errors."""

from __future__ import annotations

import numpy as np
import pytest

from calogen.energies import EnergySpec, EnergySpecError, parse_energy


@pytest.mark.parametrize(("text", "mev"), [("10GeV", 1e4), ("512MeV", 512.0), ("1TeV", 1e6), ("2.5 gev", 2500.0), ("300", 300.0), ("15keV", 0.015)])
def test_parse_energy_units(text, mev):
    assert parse_energy(text) == pytest.approx(mev)


def test_kinds_and_ranges():
    fixed = EnergySpec.parse("10GeV")
    assert fixed.kind == "fixed" and np.all(fixed.sample(3, seed=1) == 1e4)
    log = EnergySpec.parse("loguniform:1GeV:1TeV")
    values = log.sample(20000, seed=1)
    assert values.min() >= 1e3 and values.max() <= 1e6
    # log-uniform: a third of the draws per decade
    assert np.mean(values < 1e4) == pytest.approx(1 / 3, abs=0.02)
    uni = EnergySpec.parse("uniform:1GeV:2GeV").sample(1000, seed=2)
    assert uni.min() >= 1e3 and uni.max() <= 2e3 and abs(uni.mean() - 1500) < 30
    lst = EnergySpec.parse("list:256MeV,512MeV,1GeV")
    assert set(lst.sample(200, seed=3)) == {256.0, 512.0, 1000.0}
    assert lst.range == (256.0, 1000.0)
    np.testing.assert_array_equal(log.sample(5, seed=9), log.sample(5, seed=9))


@pytest.mark.parametrize(
    "text", ["0GeV", "-1GeV", "ten GeV", "5 parsecs", "loguniform:1GeV", "loguniform:2GeV:1GeV", "list:", "gauss:1GeV:2GeV"]
)
def test_malformed_specs_are_clear_errors(text):
    with pytest.raises(EnergySpecError):
        EnergySpec.parse(text)


def test_non_positive_count_is_an_error():
    with pytest.raises(EnergySpecError, match=">= 1"):
        EnergySpec.parse("1GeV").sample(0, seed=0)
