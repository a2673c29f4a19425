"""The ``Spine`` facade and what answers its calls: candle windows in memory, then the store,
then upstream for exactly the missing pages; quotes live or from REST; hot windows; the market
list and the exchange catalog; accounting and results with their ``meta``; the notifier
that turns alert-worthy log lines into apprise messages.

May import: every layer below it (``_base`` … ``_live``), never ``_serve``, ``_cli`` or ``sim``.
"""
