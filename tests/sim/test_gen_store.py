"""The generator's caches: bounded by bytes, and safe when the worker thread that generates
REST pages and the event loop's WebSocket feed use them at once."""

from __future__ import annotations

import sys
import threading

from marketspine.sim._gen_store import Lru

SIZE = 40


def test_the_lru_keeps_its_bound_and_its_newest_entry() -> None:
    lru: Lru[int, int] = Lru(100, lambda value: value)
    for key in range(5):
        lru.put(key, SIZE)
    assert len(lru) == 2 and lru.bytes == 2 * SIZE
    assert lru.get(3) == SIZE and lru.get(0) is None
    lru.put(9, 500)  # larger than the bound: it alone stays
    assert len(lru) == 1 and lru.get(9) == 500


def test_the_lru_stays_whole_under_threads_switching_at_every_step() -> None:
    """Four threads getting and putting with the interpreter switching between them as often
    as it can: without the lock, entries went missing under a concurrent eviction (KeyError)
    and ``bytes`` stopped matching what is held in four runs of five."""
    lru: Lru[int, int] = Lru(125 * SIZE, lambda value: value)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(100_000):
                key = (i * 7 + seed) % 300
                if lru.get(key) is None:
                    lru.put(key, SIZE)
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    held = [lru.get(key) for key in range(300)]
    assert lru.bytes == SIZE * len(lru) == sum(value for value in held if value is not None)
    assert len(lru) == 125
