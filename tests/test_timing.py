"""Timing harness: ms/shower against a generator that sleeps a known time, warm-up, caps, parameter counts."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from calogen.errors import CalogenError
from calogen.eval.timing import TimingError, count_parameters, time_generator
from calogen.geometry import Geometry


class SleepyGenerator:
    """Sleeps ``per_call + per_shower * n`` seconds per call, and ``first_extra`` more on its very first call."""

    geometry = Geometry.builtin("tiny")

    def __init__(self, per_call: float, per_shower: float, first_extra: float = 0.0) -> None:
        self.per_call, self.per_shower, self.first_extra = per_call, per_shower, first_extra
        self.calls: list[tuple[int, int]] = []

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        energies = np.asarray(energies).reshape(-1)
        extra = self.first_extra if not self.calls else 0.0
        self.calls.append((energies.size, seed))
        time.sleep(self.per_call + self.per_shower * energies.size + extra)
        return np.zeros((energies.size, self.geometry.n_voxels), dtype=np.float32)


FAST = {"min_repeats": 3, "min_showers": 1, "min_seconds": 0.0}


def test_ms_per_shower_follows_the_sleep_and_excludes_warmup():
    gen = SleepyGenerator(per_call=0.004, per_shower=0.0001, first_extra=0.4)
    result = time_generator(gen, energies="loguniform:1GeV:1TeV", batch_sizes=(50, 1), **FAST)
    one, fifty = result.batches  # timed smallest first
    assert (one.batch_size, fifty.batch_size) == (1, 50)
    # sleep never returns early: the floor is exact; the ceiling is generous but far below the 400 ms warm-up
    assert 4.1 <= one.ms_per_shower_median < 100.0 and one.ms_per_shower_max < 300.0
    assert 9.0 / 50 <= fifty.ms_per_shower_median < 2.0
    assert one.ms_per_shower_median > fifty.ms_per_shower_median
    assert one.warmup_seconds >= 0.4 and one.n_calls == 3 and one.n_showers == 3
    # exactly batch-size many energies per call, fresh seed per call
    assert gen.calls[:4] == [(1, s) for _, s in gen.calls[:4]] and gen.calls[-1][0] == 50
    assert len({s for _, s in gen.calls}) == len(gen.calls)


def test_without_warmup_the_slow_first_call_is_timed():
    gen = SleepyGenerator(per_call=0.002, per_shower=0.0, first_extra=0.4)
    result = time_generator(gen, energies=1e4, batch_sizes=(1,), warmup=0, **FAST)
    assert result.batches[0].ms_per_shower_max >= 400.0 and result.batches[0].warmup_seconds < 0.1


def test_min_showers_and_seconds_extend_the_run():
    gen = SleepyGenerator(per_call=0.001, per_shower=0.0)
    batch = time_generator(gen, energies="10GeV", batch_sizes=(10,), min_showers=200, min_seconds=0.05).batches[0]
    assert batch.n_showers >= 200 and batch.n_calls >= 20 and batch.timed_seconds >= 0.05
    assert batch.note == "" and not batch.capped


def test_slow_generator_is_capped_within_budget():
    gen = SleepyGenerator(per_call=0.0, per_shower=0.01)
    start = time.perf_counter()
    result = time_generator(gen, energies="10GeV", batch_sizes=(1, 10_000), max_seconds=0.3, **FAST)
    big = result.batches[1]
    assert big.capped and big.batch_size == 10_000 and big.showers_per_call < 100
    assert "capped" in big.note
    assert time.perf_counter() - start < 5.0  # an uncapped call alone would sleep 100 s
    explicit = time_generator(gen, energies="10GeV", batch_sizes=(20,), max_showers_per_call=2, **FAST)
    assert explicit.batches[0].showers_per_call == 2 and explicit.batches[0].capped


def test_budget_stops_a_long_run_and_says_so():
    gen = SleepyGenerator(per_call=0.02, per_shower=0.0)
    batch = time_generator(gen, energies="10GeV", batch_sizes=(1,), min_repeats=1000, max_seconds=0.1).batches[0]
    assert batch.n_calls < 1000 and "budget" in batch.note


def test_result_to_dict_is_json_with_environment():
    result = time_generator(SleepyGenerator(0.001, 0.0), energies="list:1GeV,2GeV", batch_sizes=(2,), **FAST)
    data = json.loads(json.dumps(result.to_dict()))
    env = data["environment"]
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu_count"] >= 1
    assert {"numba_threads", "cpu_model", "gpu"} <= set(env)
    assert data["generator"] == "SleepyGenerator" and data["batches"][0]["showers_per_call"] == 2


class TwoModels:
    """A generator-like object holding an energy model, a shape model, an alias and a list of heads."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.energy = torch.nn.Linear(2, 3)  # 9 parameters
        self.shape = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))  # 26
        self.alias = self.shape  # counted once
        self.heads = [torch.nn.Linear(1, 1, bias=False)]  # 1
        self.scale = 2.0


class WithModules:
    def __init__(self) -> None:
        self._nets = (torch.nn.Linear(5, 5), torch.nn.Linear(5, 1))

    def modules(self):
        return iter(self._nets)


def test_count_parameters_exact():
    assert count_parameters(torch.nn.Linear(3, 4)) == 16
    assert count_parameters(TwoModels()) == 9 + 26 + 1
    assert count_parameters(WithModules()) == 30 + 6
    assert count_parameters(SleepyGenerator(0.0, 0.0)) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_sizes": ()}, {"batch_sizes": (0, 10)}, {"min_repeats": 0}, {"max_seconds": 0.0}, {"energies": -5.0}],
)
def test_bad_settings_raise(kwargs):
    options = {"energies": "10GeV", "batch_sizes": (1,)} | kwargs
    with pytest.raises(TimingError) as info:
        time_generator(SleepyGenerator(0.0, 0.0), **options)
    assert isinstance(info.value, CalogenError)


def test_wrong_number_of_showers_is_reported():
    class Broken(SleepyGenerator):
        def sample(self, energies, *, seed, batch_size=None):
            return super().sample(energies, seed=seed)[:1]

    with pytest.raises(TimingError, match="returned 1 showers for 4 energies"):
        time_generator(Broken(0.0, 0.0), energies="10GeV", batch_sizes=(4,), **FAST)
