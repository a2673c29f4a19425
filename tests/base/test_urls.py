"""What a client may be shown of a failure (#24 point 4): database and Redis URLs in an
error text are withheld whole, with or without a password, other URLs stay."""

from __future__ import annotations

import pytest

from marketspine._base.urls import without_db_urls


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://spine:s3cret@db.lan:5432/candles",
        "postgres://spine@10.0.0.5/candles?sslmode=require&password=s3cret",
        "redis://:s3cret@127.0.0.1:6379/0",
        "rediss://cache.lan:6380",
        "POSTGRESQL://u:p@h/d",
    ],
)
def test_database_urls_are_withheld_whole(url: str) -> None:
    text = f"cannot open the candle database {url}: connection refused"
    shown = without_db_urls(text)
    assert shown == "cannot open the candle database <database URL>: connection refused"
    assert "s3cret" not in shown


def test_other_urls_and_quoted_urls_are_handled() -> None:
    assert without_db_urls("upstream http://127.0.0.1:8765 down") == (
        "upstream http://127.0.0.1:8765 down"
    )
    assert without_db_urls("'postgresql://u:p@h/d' failed") == "'<database URL>' failed"
