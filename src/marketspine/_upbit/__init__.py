"""Upbit's protocol, in one home for the client, ``serve`` and the simulator: the REST and
WebSocket wire formats both ways (decode into records, render records back into Upbit's JSON
and frames), error bodies and texts, orderbook levels, the tick table, how far back 1s
candles are served. Pure: no I/O.

May import: the public face and ``_base``.
"""
