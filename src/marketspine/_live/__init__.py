"""The WebSocket side: one upstream ``Stream`` per connection (or one shared through Redis),
its combined subscription, gapless trade sequencing with REST fill, the listeners it delivers
to, and the live state that answers tickers, books and trades from memory.

May import: the public face, ``_base``, ``_upbit``, ``_budget``, ``_client`` and ``_store``.
"""
