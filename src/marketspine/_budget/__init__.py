"""When a request may be sent: the rate budget of Upbit's limit groups, in one process
(``local``) or shared by every process on an egress IP through Redis (``redis`` with its Lua
scripts in ``redis_lua``). What both share — priorities, the ``RateBudget`` protocol, the
checks of their settings, their statistics and the order in which waiters go — is in
``rules``.

May import: the public face, ``_base`` and ``_upbit``.
"""
