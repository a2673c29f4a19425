"""``recording_for(store)``: the ``RecordingStore`` over an open candle store, whichever kind."""

from __future__ import annotations

from ..errors import InvalidRequestError
from .recording import RecordingStore
from .recording_sqlite import SQLiteRecording
from .sqlite import CandleStore, SQLiteStore

__all__ = ["recording_for"]


def recording_for(store: CandleStore) -> RecordingStore:
    """The recording tables of ``store``'s database (SQLite or PostgreSQL).

    Raises InvalidRequestError for a store of another kind (one a caller made itself)."""
    if isinstance(store, SQLiteStore):
        return SQLiteRecording(store)
    if type(store).__name__ == "PostgresStore":
        from .postgres import PostgresStore
        from .recording_postgres import PostgresRecording  # psycopg only when used

        if isinstance(store, PostgresStore):
            return PostgresRecording(store)
    raise InvalidRequestError(
        f"cannot record into a {type(store).__name__}: expected an SQLite file or a "
        "postgresql:// database"
    )
