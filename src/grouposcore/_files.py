"""Durable, private files: the one way grouposcore replaces a file that holds a secret or a
promise (keys, sequence number reservations, anti-rollback state).

The data goes to a temporary file beside the target, made 0600, fsync'ed, renamed over the
target, and the folder is fsync'ed: after a crash the target holds the old bytes or the new
ones, never a torn file, and a rename that returned has reached the disk (a sequence number
reservation that could be undone by a crash would let a restarted sender reuse a nonce).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive_file", "write_private_file"]


def write_private_file(path: str | os.PathLike[str], data: bytes, prefix: str = ".tmp-") -> Path:
    """Atomically replace ``path`` with a 0600 file holding ``data``: a crash leaves the old
    file or the new one, never a torn or world-readable one (file and folder fsync'ed)."""
    target = Path(path)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


@contextlib.contextmanager
def exclusive_file(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``PATH.lock`` (made 0600 if missing): between reading
    ``path`` and replacing it, no other process that takes the same lock gets in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock
