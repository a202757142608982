"""Bearer-token auth: header parsing and the constant-time check (the HTTP behaviour is in test_server_api)."""

from __future__ import annotations

import pytest

from uniscale_lc.server.auth import BearerAuthMiddleware, bearer_token, token_matches


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc123", "abc123"),
        ("bearer   abc123 ", "abc123"),
        ("Basic abc123", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_token_matches_only_the_exact_token() -> None:
    assert token_matches("s3cret-token", "s3cret-token")
    assert not token_matches("s3cret-token", "s3cret-toke")
    assert not token_matches("s3cret-token", "s3cret-token2")
    assert not token_matches("s3cret-token", None)


def test_middleware_refuses_an_empty_token_and_hides_it() -> None:
    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(ValueError, match="empty"):
        BearerAuthMiddleware(app, "")
    assert "s3cret" not in repr(BearerAuthMiddleware(app, "s3cret-token"))
