"""Optional dependencies: which extra brings each, and one line naming it when it is missing.

``pip install marketspine`` brings what ``collect``, ``export``, ``status``, ``warmup`` and
``Spine`` on SQLite need. The rest comes with extras (``marketspine[serve]``, ...). Each
place a user reaches an optional part calls ``need(extra)`` first, so a missing package is
``MissingExtraError`` (one line naming the extra to install), never an ImportError traceback
from deep inside the package.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ..errors import MissingExtraError

__all__ = ["EXTRAS", "Extra", "missing_extra", "need"]


@dataclass(frozen=True, slots=True)
class Extra:
    modules: tuple[str, ...]  # top-level import names, as ``import`` spells them
    what: str  # what the user reached, for the message


# The import names here and the extras in pyproject.toml's [project.optional-dependencies]
# must agree; tests/base/test_extras.py checks that they do.
EXTRAS: dict[str, Extra] = {
    "serve": Extra(("starlette", "uvicorn", "prometheus_client", "plotly"), "marketspine serve"),
    "sim": Extra(
        ("starlette", "uvicorn", "numpy"), "the simulator (marketspine sim, --upstream sim)"
    ),
    "redis": Extra(("redis",), "Redis (--redis, Spine(redis=...))"),
    "postgres": Extra(("psycopg",), "PostgreSQL (a postgresql:// database)"),
    "pandas": Extra(("pandas",), "CandleResult.to_pandas()"),
    "polars": Extra(("polars",), "CandleResult.to_polars()"),
    "parquet": Extra(("pyarrow",), "--format parquet"),
}


def missing_extra(extra: str) -> MissingExtraError:
    """The error for ``extra`` not being installed: ``WHAT needs the 'EXTRA' extra: pip
    install 'marketspine[EXTRA]'``."""
    return MissingExtraError(
        f"{EXTRAS[extra].what} needs the {extra!r} extra: pip install 'marketspine[{extra}]'"
    )


def need(extra: str) -> None:
    """Raise ``MissingExtraError`` unless every module of ``extra`` can be imported.

    Looks the modules up without importing them (``find_spec``), so the check costs a
    start-up nothing; a module set to None in ``sys.modules`` counts as missing, as
    ``import`` treats it.
    """
    for module in EXTRAS[extra].modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent that fails, a module without a spec
            found = False
        if not found:
            raise missing_extra(extra)
