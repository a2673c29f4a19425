"""schemathesis over serve's own OpenAPI description (``/api/openapi.json``): every
operation it lists is called with generated and malformed parameters on a real serve
process in front of the loopback simulator, and none is answered 5xx.

``POST /api/backfill`` is left out: a generated body may start a backfill of years of
candles, a background job far bigger than a test's few seconds (its bad input is covered
by the backfill tests). The DELETE of a job and the admin warmup are fuzzed, with the admin
token given."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from serve_support import TOKEN, ServeProcess

# Each starts a real serve process (serve_support.serve_process).
pytestmark = pytest.mark.process

# schemathesis' own pytest integration (``from_fixture``) does not run on pytest 9, so its
# strategies are drawn by a plain hypothesis test instead.


def test_no_operation_answers_5xx(serve: ServeProcess) -> None:
    schema = schemathesis.openapi.from_url(serve.url + "/api/openapi.json").exclude(
        method="POST", path="/api/backfill"
    )
    called: set[str] = set()
    # Valid and invalid requests (negative: wrong types, missing required values ...).
    cases = st.one_of(
        schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
        schema.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=120,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def call(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
        called.add(f"{case.method} {case.path}")
        case.call_and_validate(
            base_url=serve.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            checks=[not_a_server_error],
            timeout=15,
        )

    call()
    assert len(called) >= 5, called  # most operations were reached
