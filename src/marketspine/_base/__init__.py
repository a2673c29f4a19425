"""What every layer needs, with no knowledge of Upbit or of I/O: UTC milliseconds and
timeframes, coverage ranges, market codes and the public API's argument checks, the memory
budget, a keyed lock, what a --db or --upstream URL names, which extra brings an optional
dependency.

May import: the public face only (``marketspine.errors``, ``marketspine.records``).
"""
