"""Item 2 of issue 11: a full disk is a one-line error with exit 2, never a crash of libhdf5 (which
corrupts its heap when a file is closed after a failed write), and leaves no temporary behind.

The disk is filled for real on a 2 MB tmpfs where mounting is permitted, and by an injected ENOSPC
from ``os.pwrite`` (the call through which HDF5 writes) everywhere else.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess

import numpy as np
import pytest
from _faults import one_error_line, run_commands

from calogen.io import ShowerWriter
from calogen.outputs import GuardedFile, OutputPathError

INJECT = """
import errno, os
real, budget = os.pwrite, [{budget}]
def pwrite(fd, data, offset):
    if len(data) > budget[0]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    budget[0] -= len(data)
    return real(fd, data, offset)
os.pwrite = pwrite
"""


def _enospc_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    real, left = os.pwrite, [budget]

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if len(data) > left[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        left[0] -= len(data)
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


def test_guarded_file_keeps_failed_writes_readable(tmp_path, monkeypatch):
    _enospc_after(monkeypatch, 10)
    f = GuardedFile(tmp_path / "g.bin")
    f.write(b"0123456789")
    assert f.failure is None
    f.seek(20)
    assert f.write(b"abcdef") == 6 and f.failure is not None and f.failure.errno == errno.ENOSPC
    f.seek(4)
    f.write(b"XY")  # after a failure, held in memory
    f.seek(0)
    assert f.read(26) == b"0123XY6789" + bytes(10) + b"abcdef"
    assert f.seek(0, os.SEEK_END) == 26
    assert "No space left on device" in str(f.error(tmp_path / "out.h5"))
    f.close()


def test_shower_writer_reports_a_full_disk_and_removes_its_temporary(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    _enospc_after(monkeypatch, 200_000)
    with pytest.raises(OutputPathError, match="write failed: No space left on device"):
        with ShowerWriter(tmp_path / "s.h5", 120) as writer:
            for _ in range(20):
                writer.append(np.full((500, 1), 1e3), rng.random((500, 120), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_shower_writer_fails_cleanly_when_closing_hits_a_full_disk(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    writer = ShowerWriter(tmp_path / "s.h5", 120)
    writer.append(np.full((50, 1), 1e3), rng.random((50, 120), dtype=np.float32))  # held in HDF5's chunk cache
    _enospc_after(monkeypatch, 0)
    with pytest.raises(OutputPathError, match="No space left on device"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("budget", [0, 300_000])
def test_simulate_and_generate_on_a_full_disk_exit_2(tmp_path, tiny_model, budget):
    results = run_commands(
        [["simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "50GeV", "--n", "3000", "--chunk-size", "1000", "-o", "s.h5"],
         ["generate", tiny_model, "--energy", "50GeV", "--n", "3000", "-o", "g.h5"]],
        cwd=tmp_path, prelude=INJECT.format(budget=budget),
    )  # fmt: skip
    for (status, err), name in zip(results, ("simulate", "generate"), strict=True):
        assert status == 2 and "No space left on device" in one_error_line(err, name)
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert not [n for n in left if n.endswith((".h5", ".partial"))], left  # only simulate's resumable chunks stay


def test_train_on_a_full_disk_exits_2_and_removes_its_directory(tmp_path, cli, shower_file, monkeypatch):
    import calogen.train.loop as loop

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "checkpoints"))

    monkeypatch.setattr(loop, "write_checkpoint", full)
    status, err = cli("train", "--data", shower_file, "--geometry", "tiny", "--preset", "tiny", "--out", tmp_path / "run", "--max-steps", "2")
    assert status == 2 and "No space left on device" in one_error_line(err, "train")
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()

    class Statvfs:
        f_bavail, f_frsize = 100, 4096

    monkeypatch.setattr(os, "statvfs", lambda path: Statvfs)
    status, err = cli("train", "--data", shower_file, "--geometry", "tiny", "--preset", "tiny", "--out", tmp_path / "run", "--max-steps", "2")
    assert status == 2 and "0.4 MB free" in one_error_line(err, "train")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MB tmpfs (skipped where mounting is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_real_full_tmpfs(small_tmpfs, shower_file, tiny_model):
    free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
    (small_tmpfs / "filler").write_bytes(bytes(free - (256 << 10)))  # leave 256 kB
    results = run_commands(
        [["simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "50GeV", "--n", "3000", "--chunk-size", "3000", "-o", small_tmpfs / "s.h5"],
         ["generate", tiny_model, "--energy", "50GeV", "--n", "3000", "-o", small_tmpfs / "g.h5"],
         ["train", "--data", shower_file, "--geometry", "tiny", "--preset", "cpu-small", "--out", small_tmpfs / "m", "--max-steps", "1"]],
        cwd=small_tmpfs,
    )  # fmt: skip
    for (status, err), name in zip(results, ("simulate", "generate", "train"), strict=True):
        assert status == 2 and "MB free" in one_error_line(err, name)
    assert {p.name for p in small_tmpfs.iterdir()} <= {"filler", "s.h5.partial"}  # simulate's resumable work may stay
    assert not [p for p in small_tmpfs.rglob("*") if p.name.endswith((".h5", ".partial", ".tmp")) and p.is_file()]
