"""``marketspine serve``: one ``Spine`` for every client on the host, behind Upbit-compatible
REST (``upbit_rest``) and WebSocket (``upbit_ws`` with ``ws_hub``; its client state in
``ws_client``, shared with ``replay_ws``), the JSON API, backfill jobs, metrics and the admin
page; and the uvicorn runner it shares with the simulator.

May import: every layer below it, through ``_spine``. Never ``sim`` or ``_cli``.
"""
