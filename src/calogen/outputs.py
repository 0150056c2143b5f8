"""Safe destinations: the one place that decides whether calogen may write a path, and how.

Every writer (shower files, model directories, reports, exported graphs, parameter files) goes
through :func:`check_destination` (a file) or :func:`check_output_dir` (a directory), before any long
computation and again when the finished file is moved into place. The rules:

- a destination that exists must be a regular file (replaced) or, for a directory, a directory;
  a device, FIFO, socket or directory in place of a file is refused, never replaced;
- a symbolic link is refused: calogen neither writes through a link nor replaces it (give the
  link's target, or remove the link);
- the parent directory must exist and be writable.

:func:`atomic_path` writes into a hidden temporary ``.NAME.HOST-PID.XXXXXXXX.partial`` beside the
destination and renames it into place only on success; temporaries left by killed processes of this
host are removed by the next write to the same destination. :class:`GuardedFile` is the handle
through which HDF5 writes such a temporary: a failed write (disk full, quota, I/O error) is held in
memory and reported to the caller instead of to libhdf5, which cannot recover from one (closing a file
after a failed write corrupts its heap: exit 134 or 139).

Example:
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(d, "x.txt")) as tmp:
    ...     _ = tmp.write_text("done")
    >>> sorted(os.listdir(d))
    ['x.txt']
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from calogen.errors import CalogenError

__all__ = [
    "GuardedFile",
    "OutputPathError",
    "atomic_path",
    "check_destination",
    "check_output_dir",
    "ensure_free_space",
    "free_space_text",
    "set_new_file_mode",
]

log = logging.getLogger(__name__)


class OutputPathError(CalogenError):
    """A destination cannot be written safely: a special file or link, a missing directory, no space."""


_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket"}  # fmt: skip


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def _check_parent(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise OutputPathError(f"{path}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: directory {parent} is not writable; choose another output path")


def check_destination(path: str | os.PathLike[str]) -> Path:
    """``path`` if a regular file may be created or replaced there; raise :class:`OutputPathError` otherwise."""
    path = Path(path)
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot inspect it ({exc.strerror}); choose another output path") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise OutputPathError(
            f"{path} is a symbolic link (to {os.readlink(path)}); calogen neither writes through nor replaces "
            "links: give the target path or remove the link"
        )
    if st is not None and not stat.S_ISREG(st.st_mode):
        hint = f"; give a file name such as {path / 'out.h5'}" if stat.S_ISDIR(st.st_mode) else ""
        raise OutputPathError(f"{path} exists and is {_kind(st.st_mode)}, not a regular file; refusing to replace it{hint}")
    _check_parent(path)
    return path


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a directory or can be created as one (with its parents); raise otherwise."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            kind = "a dangling symbolic link" if not path.exists() else _kind(path.stat().st_mode)
            raise OutputPathError(f"{path} exists and is {kind}, not a directory; choose another output directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{path}: directory is not writable; choose another output directory")
        return path
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: cannot create it inside {ancestor}; choose another output directory")
    return path


def free_space_text(path: str | os.PathLike[str]) -> str:
    """Free space on the file system holding ``path``, e.g. ``"1.9 MB free"`` (empty if unknown)."""
    try:
        st = os.statvfs(Path(path).parent)
    except OSError:
        return ""
    return f"{st.f_bavail * st.f_frsize / 1e6:.1f} MB free"


def ensure_free_space(path: str | os.PathLike[str], nbytes: int, *, margin: int = 1 << 20) -> None:
    """Raise :class:`OutputPathError` unless the file system of ``path`` (a directory) has ``nbytes``
    plus ``margin`` bytes free: for writers that fail badly on a full disk (safetensors, HDF5)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if free < nbytes + margin:
        raise OutputPathError(
            f"{path}: {free / 1e6:.1f} MB free, {(nbytes + margin) / 1e6:.1f} MB needed; free space or choose another output path"
        )


# --- temporaries ---------------------------------------------------------------------------------
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Remove temporaries of ``path`` left by dead processes of this host; returns what was removed."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.({re.escape(_host())})-(\d+)\.[^.]+\.partial$")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            match = pattern.match(entry.name)
            if match and int(match.group(2)) != os.getpid() and not _pid_alive(int(match.group(2))):
                if entry.is_file(follow_symlinks=False):
                    Path(entry.path).unlink(missing_ok=True)
                    removed.append(Path(entry.path))
    for stale in removed:
        log.info("removed %s, left by an interrupted run", stale)
    return removed


def set_new_file_mode(path: Path) -> None:
    """Give ``path`` the permissions of a newly created file: ``0o666`` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``path`` is checked with :func:`check_destination` before and again just before the rename.
    """
    path = check_destination(path)
    remove_stale_partials(path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".partial")
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot write there ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    set_new_file_mode(tmp)  # mkstemp creates 0600; give the final file the usual permissions
    try:
        yield tmp
        check_destination(path)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputPathError(f"{path}: {exc.strerror} ({free_space_text(path)}); free space or choose another output path") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


class GuardedFile:
    """A read-write file handle for h5py's file-object driver that never lets a write fail.

    The first failing write (disk full, quota, I/O error) is stored in :attr:`failure`; it and every
    later write are kept in memory (at most the data of the call in progress plus HDF5's caches) and
    served back to reads, so libhdf5's view of the file stays consistent and it can close cleanly.
    The owner checks :attr:`failure` after each HDF5 call, raises it, and deletes the file.

    Args:
        path: the file, created or truncated.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        self._pos = 0
        self._held: dict[int, bytes] = {}
        self.failure: OSError | None = None

    def _eof(self) -> int:
        return max([os.fstat(self._fd).st_size, *(o + len(b) for o, b in self._held.items())])

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the position (as :meth:`io.RawIOBase.seek`)."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._eof()}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        """The position."""
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read into ``buffer`` from the position; held writes take precedence over the disk."""
        view = memoryview(buffer).cast("B")
        n, start = len(view), self._pos
        data = os.pread(self._fd, n, start)
        view[: len(data)] = data
        view[len(data) :] = bytes(n - len(data))  # past the end of the disk file: zeros unless held
        end = start + len(data)
        for offset, held in self._held.items():  # in write order: later writes win
            lo, hi = max(offset, start), min(offset + len(held), start + n)
            if lo < hi:
                view[lo - start : hi - start] = held[lo - offset : hi - offset]
                end = max(end, hi)
        self._pos = end
        return end - start

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the position."""
        buffer = bytearray(self._eof() - self._pos if size < 0 else size)
        return bytes(buffer[: self.readinto(buffer)])

    def write(self, data: bytes | memoryview) -> int:
        """Write at the position; never raises (see the class docstring)."""
        data = bytes(data)
        if self.failure is None:
            try:
                done = 0
                while done < len(data):
                    done += os.pwrite(self._fd, data[done:], self._pos + done)
            except OSError as exc:
                self.failure = exc
                self._hold(self._pos + done, data[done:])
        else:
            self._hold(self._pos, data)
        self._pos += len(data)
        return len(data)

    def _hold(self, offset: int, data: bytes) -> None:
        self._held.pop(offset, None)  # re-inserted last, so it wins over older overlapping blocks
        self._held[offset] = data

    def truncate(self, size: int | None = None) -> int:
        """Set the file size (ignored after a failure)."""
        size = self._pos if size is None else size
        if self.failure is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.failure = exc
        return size

    def flush(self) -> None:
        """Nothing to flush: writes go straight to the file."""

    def close(self) -> None:
        """Close the descriptor and drop held data."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._held.clear()

    def error(self, destination: str | os.PathLike[str]) -> OutputPathError | None:
        """The failure as a one-line :class:`OutputPathError` about ``destination`` (None without one)."""
        if self.failure is None:
            return None
        reason = self.failure.strerror or str(self.failure)
        space = free_space_text(self.path)
        return OutputPathError(f"{destination}: write failed: {reason}{f' ({space})' if space else ''}; free space or choose another output path")
