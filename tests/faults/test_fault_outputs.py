"""Item 1 of issue 11: no writer replaces a device, FIFO, socket, directory or symbolic link, and
temporaries of killed processes do not pile up."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
from _faults import one_error_line

from calogen.io import ShowerFile, ShowerFileError, write_showers
from calogen.outputs import OutputPathError, atomic_path, check_destination, check_output_dir, remove_stale_partials


def _make(kind: str, path: Path) -> None:
    if kind == "chardev":
        try:
            os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("mknod is not permitted here")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        (path.parent / "target.h5").write_bytes(b"precious")
        path.symlink_to("target.h5")


KINDS = ["chardev", "fifo", "socket", "directory", "symlink"]
MESSAGES = {"chardev": "is a character device", "fifo": "is a FIFO", "socket": "is a socket",
            "directory": "is a directory", "symlink": "is a symbolic link"}  # fmt: skip


def _unchanged(path: Path, kind: str) -> None:
    mode = path.lstat().st_mode
    test = {"chardev": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK, "directory": stat.S_ISDIR, "symlink": stat.S_ISLNK}
    assert test[kind](mode)
    if kind == "symlink":
        assert (path.parent / "target.h5").read_bytes() == b"precious"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("kind", KINDS)
def test_library_writers_refuse_special_destinations(tmp_path, kind):
    target = tmp_path / "out.h5"
    _make(kind, target)
    with pytest.raises(OutputPathError, match=MESSAGES[kind]):
        write_showers(target, np.full((2, 1), 1e3), np.ones((2, 120)))
    with pytest.raises(OutputPathError, match=MESSAGES[kind]):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    _unchanged(target, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_simulate_refuses_special_destinations(tmp_path, cli, kind):
    target = tmp_path / "out.h5"
    _make(kind, target)
    status, err = cli("simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "1GeV", "--n", "3", "-o", target)
    assert status == 2 and MESSAGES[kind] in one_error_line(err, "simulate")
    _unchanged(target, kind)
    assert not (tmp_path / "out.h5.partial").exists()


@pytest.mark.parametrize("kind", ["chardev", "fifo", "symlink"])
def test_generate_and_calibrate_refuse_special_destinations(tmp_path, cli, tiny_model, shower_file, kind):
    target = tmp_path / "out.h5"
    _make(kind, target)
    status, err = cli("generate", tiny_model, "--energy", "10GeV", "--n", "3", "-o", target)
    assert status == 2 and MESSAGES[kind] in one_error_line(err, "generate")
    status, err = cli("calibrate-gflash", shower_file, "--geometry", "tiny", "-o", target, "--n-model", "4", "--n-hits", "4")
    assert status == 2 and MESSAGES[kind] in one_error_line(err, "calibrate-gflash")
    _unchanged(target, kind)


@pytest.mark.parametrize("kind", ["chardev", "fifo", "socket"])
def test_directory_outputs_refuse_special_files(tmp_path, cli, shower_file, kind):
    target = tmp_path / "out"
    _make(kind, target)
    status, err = cli("train", "--data", shower_file, "--geometry", "tiny", "--preset", "tiny", "--out", target, "--max-steps", "1")
    assert status == 2 and "not a directory" in one_error_line(err, "train")
    status, err = cli("evaluate", shower_file, shower_file, "--geometry", "tiny", "--out", target, "--metrics", "hist", "--quiet")
    assert status == 2 and "not a directory" in one_error_line(err, "evaluate")
    _unchanged(target, kind)


def test_regular_files_are_replaced_and_directories_created(tmp_path):
    (tmp_path / "old.h5").write_bytes(b"old")
    assert check_destination(tmp_path / "old.h5") == tmp_path / "old.h5"
    write_showers(tmp_path / "old.h5", np.full((2, 1), 1e3), np.ones((2, 120)))
    assert ShowerFile(tmp_path / "old.h5").n_showers == 2
    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(OutputPathError, match="does not exist"):
        check_destination(tmp_path / "missing" / "x.h5")


def test_inputs_that_are_directories_or_special_files_are_named(tmp_path):
    with pytest.raises(ShowerFileError, match="is a directory"):
        ShowerFile(tmp_path)
    os.mkfifo(tmp_path / "pipe.h5")
    with pytest.raises(ShowerFileError, match="not a regular file"):
        ShowerFile(tmp_path / "pipe.h5")
    with pytest.raises(ShowerFileError, match="no such file"):
        ShowerFile(tmp_path / "none.h5")


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_temporaries_of_dead_processes_are_removed_by_the_next_write(tmp_path, cli, tiny_model):
    from calogen.outputs import _host

    out = tmp_path / "gen.h5"
    dead = tmp_path / f".gen.h5.{_host()}-{_dead_pid()}.abcdefgh.partial"
    alive = tmp_path / f".gen.h5.{_host()}-{os.getppid()}.abcdefgh.partial"  # a live process: not ours to remove
    other_host = tmp_path / ".gen.h5.elsewhere-1.abcdefgh.partial"
    for path in (dead, alive, other_host):
        path.write_bytes(b"half")
    status, err = cli("generate", tiny_model, "--energy", "10GeV", "--n", "2", "-o", out)
    assert status == 0, err
    assert not dead.exists() and alive.exists() and other_host.exists() and out.is_file()
    assert remove_stale_partials(out) == []
