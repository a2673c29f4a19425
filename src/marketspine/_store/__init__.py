"""Where candles are kept and how they get there: the ``CandleStore`` in SQLite and
PostgreSQL (and the recording tables beside them: trades, known gaps, books, tickers), the
backfill planner and runner, 1m-derived timeframes, migration between stores,
the default database path, and the Redis leases that keep processes from fetching a page twice.

May import: the public face, ``_base``, ``_upbit``, ``_budget`` and ``_client``.
"""
