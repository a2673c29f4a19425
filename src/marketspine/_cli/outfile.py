"""Output files written whole or not at all: a temporary file beside the target, renamed
into place once complete, so a failure (full disk, Ctrl-C, bad data) never leaves a partial
file and never damages an older file of that name."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InvalidRequestError

__all__ = ["atomic_output", "check_output_path"]


def _cannot(path: Path, cause: str) -> InvalidRequestError:
    return InvalidRequestError(f"cannot write --out {path}: {cause}")


def check_output_path(path: Path) -> None:
    """Raise InvalidRequestError (one line: the path and the cause) when ``path`` cannot be
    an output file: a directory or device there, a missing or non-folder parent."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # e.g. "Not a directory": a parent on the way is a file
        raise _cannot(path, _cause(exc)) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise _cannot(path, "it is a directory (expected a file path)")
    if mode is not None and not stat.S_ISREG(mode):
        # Renaming onto a device or a pipe would replace it, not write through it.
        raise _cannot(path, "it is not a regular file (a device, pipe or socket)")
    parent = path.parent
    if not parent.exists():
        raise _cannot(path, f"the folder {parent} does not exist")
    if not parent.is_dir():
        raise _cannot(path, f"{parent} is not a folder")


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``
    (flushed to disk first), on any exception it is removed and ``path`` stays as it was.

    OSErrors (no permission, read-only file system, disk full) become one-line
    InvalidRequestErrors naming ``path`` and the cause.
    """
    check_output_path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise _cannot(path, _cause(exc)) from None
    temporary = Path(name)
    try:
        try:
            os.fchmod(fd, _file_mode(path))
        finally:
            os.close(fd)
        yield temporary
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        _remove(temporary)
        raise _cannot(path, _cause(exc)) from None
    except BaseException:
        _remove(temporary)
        raise


def _file_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0666 less umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
