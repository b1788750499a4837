"""Files that hold secrets (GM channel keys, member state): written 0600, read only if private.

A file other users can read has leaked its secrets already, and one they can write lets
them substitute keys; either way the member must not use it. The refusal names the chmod
that fixes it, as the OSCORE key files do (:func:`grouposcore.oscore.config.read_secret_file`).
"""

from __future__ import annotations

import os
import stat

from grouposcore._files import write_private_file
from grouposcore.errors import ManagerMessageError

__all__ = ["read_private_file", "write_private_file"]

#: Permission bits that let anyone but the owner read or write the file.
_SHARED = stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH


def read_private_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of ``path``; ManagerMessageError if it is missing, unreadable, or readable
    or writable by other users (checked on the opened file, so a swap cannot slip past)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ManagerMessageError(f"cannot read {what} {path}: {exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & _SHARED:
            raise ManagerMessageError(
                f"{what} {path} is accessible by other users; run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as exc:
        raise ManagerMessageError(f"cannot read {what} {path}: {exc}") from None
    finally:
        os.close(fd)
