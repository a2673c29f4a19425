"""Where a process's memory sits, for the soak: one ``probe()`` per sample separates the
sources of an RSS rise that Python-level tracing does not see.

- ``smaps``: RSS by kind of mapping (the main heap ``[heap]``, anonymous mappings: glibc's
  thread arenas, mmap'd large blocks and Python's 1 MiB obmalloc arenas; file-backed).
- ``malloc``: glibc ``mallinfo2()`` (totals over every arena) and ``malloc_info()`` per
  arena (so the store's worker thread, which allocates from its own arena, shows apart).
- ``obmalloc``: Python's small-object allocator from ``sys._debugmallocstats`` (arenas held,
  bytes in used and free blocks) and ``sys.getallocatedblocks()``.
- ``sqlite``: SQLite's own allocator (``sqlite3_memory_used`` and its page cache status) via
  ctypes on the same shared library the ``sqlite3`` module loaded.

Linux and glibc only; every part that cannot be read is left out rather than guessed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import Any

__all__ = ["malloc_trim", "probe"]

MIB = 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes from brk (the main arena's heap)
            "ordblks",  # free chunks
            "smblks",  # free fastbin chunks
            "hblks",  # mmap'd blocks
            "hblkhd",  # bytes in mmap'd blocks
            "usmblks",
            "fsmblks",  # bytes in free fastbin chunks
            "uordblks",  # bytes in use
            "fordblks",  # bytes free (in every arena's chunks)
            "keepcost",  # releasable from the top of the main heap
        )
    ]


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name)


_LIBC = _libc()


def _sqlite() -> Any:
    """The SQLite library the ``sqlite3`` module uses (dlopen returns the loaded copy)."""
    import _sqlite3  # noqa: F401  (loads the library this looks for)

    with open("/proc/self/maps") as maps:
        for line in maps:
            if "libsqlite3" in line:
                return ctypes.CDLL(line.split()[-1])
    return None  # linked into _sqlite3 itself: its symbols are not exported


_SQLITE = _sqlite()
_SQLITE_STATUS_MEMORY_USED = 0
_SQLITE_STATUS_PAGECACHE_USED = 1
_SQLITE_STATUS_PAGECACHE_OVERFLOW = 2


def malloc_trim() -> bool:
    """Give free memory at the top of the heap and in free pages of every arena back to the
    system; True if any was released. False where glibc is not there."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


def _mallinfo() -> dict[str, float]:
    if _LIBC is None or not hasattr(_LIBC, "mallinfo2"):
        return {}
    _LIBC.mallinfo2.restype = _Mallinfo2
    info = _LIBC.mallinfo2()
    return {
        name: getattr(info, name) / MIB
        for name in ("arena", "hblkhd", "uordblks", "fordblks", "fsmblks", "keepcost")
    }


def _arenas() -> list[dict[str, float]]:
    """Per glibc arena: bytes held from the system, and free inside it (``malloc_info``)."""
    if _LIBC is None or not hasattr(_LIBC, "malloc_info"):
        return []
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        _LIBC.fopen.restype = ctypes.c_void_p
        _LIBC.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        _LIBC.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        _LIBC.fclose.argtypes = [ctypes.c_void_p]
        stream = _LIBC.fopen(out.name.encode(), b"w")
        if not stream:
            return []
        _LIBC.malloc_info(0, stream)
        _LIBC.fclose(stream)
        root = ET.parse(out.name).getroot()
    arenas = []
    for heap in root.findall("heap"):
        held = {s.get("type"): int(s.get("size", "0")) for s in heap.findall("system")}
        free = {t.get("type"): int(t.get("size", "0")) for t in heap.findall("total")}
        arenas.append(
            {
                "held": held.get("current", 0) / MIB,
                "free": (free.get("fast", 0) + free.get("rest", 0)) / MIB,
            }
        )
    return arenas


_STAT = re.compile(
    r"^# (arenas allocated current|bytes in allocated blocks|bytes in available blocks)"
    r"\s*=\s*([\d,]+)"
)


def _obmalloc() -> dict[str, float]:
    """Python's small-object allocator: ``sys._debugmallocstats`` writes to the C stderr,
    so it is caught through file descriptor 2."""
    found: dict[str, float] = {"blocks": float(sys.getallocatedblocks())}
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile(mode="w+") as out:
            os.dup2(out.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
            out.seek(0)
            for line in out:
                match = _STAT.match(line)
                if match:
                    found[match[1]] = float(match[2].replace(",", ""))
    finally:
        os.close(saved)
    return {
        "blocks": found["blocks"],
        "arenas": found.get("arenas allocated current", 0.0),
        "used": found.get("bytes in allocated blocks", 0.0) / MIB,
        "free": found.get("bytes in available blocks", 0.0) / MIB,
    }


def _sqlite_memory() -> dict[str, float]:
    if _SQLITE is None:
        return {}
    _SQLITE.sqlite3_memory_used.restype = ctypes.c_int64
    current, high = ctypes.c_int64(), ctypes.c_int64()
    pages: dict[str, float] = {"used": _SQLITE.sqlite3_memory_used() / MIB}
    for name, op in (
        ("pagecache_used", _SQLITE_STATUS_PAGECACHE_USED),
        ("pagecache_overflow", _SQLITE_STATUS_PAGECACHE_OVERFLOW),
    ):
        if _SQLITE.sqlite3_status64(op, ctypes.byref(current), ctypes.byref(high), 0) == 0:
            pages[name] = current.value / (MIB if name == "pagecache_overflow" else 1)
    return pages


def _smaps() -> dict[str, float]:
    """RSS in MiB by kind of mapping: heap, anon (unnamed), stack, file-backed."""
    kinds = {"heap": 0, "anon": 0, "stack": 0, "file": 0}
    kind = "file"
    with contextlib.suppress(OSError), open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(maxsplit=6)
            if "-" in first[0] and len(first) >= 5:  # a mapping's header line
                name = first[5].strip() if len(first) > 5 else ""
                kind = (
                    "heap"
                    if name == "[heap]"
                    else "stack"
                    if name.startswith("[stack")
                    else "anon"
                    if name == "" or name.startswith("[anon")
                    else "file"
                )
            elif first[0] == "Rss:":
                kinds[kind] += int(first[1])
    return {k: v / 1024 for k, v in kinds.items()}


def probe() -> dict[str, Any]:
    """One sample of every source above (MiB unless a name says otherwise)."""
    return {
        "smaps": _smaps(),
        "malloc": _mallinfo(),
        "arenas": _arenas(),
        "obmalloc": _obmalloc(),
        "sqlite": _sqlite_memory(),
    }
