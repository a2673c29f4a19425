"""The WebSocket side: one upstream ``Stream`` per connection (or one shared through Redis),
its combined subscription, gapless trade sequencing with REST fill, the listeners it delivers
to, the live state that answers tickers, books and trades from memory, and the recorder
that writes the stream to the recording tables (with its REST backfill of their holes).

May import: the public face, ``_base``, ``_upbit``, ``_budget``, ``_client`` and ``_store``.
"""
