"""How a request is sent: the REST ``Client`` and its chain of steps (retries, circuit
breaker, rate budget, in-flight sharing, adaptive timeout), what replies say besides the data,
and upstream's clock.

May import: the public face, ``_base``, ``_upbit`` and ``_budget``.
"""
