"""Optional bearer-token auth: with a token configured, every request but GET /health needs
`Authorization: Bearer <token>`, else 401 in OpenAI's error shape. The token is compared in constant time
and never logged or echoed.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .errors import ApiError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Liveness probes (load balancers, orchestrators) carry no credentials.
OPEN_PATHS = frozenset({"/health"})


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess was right."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


UNAUTHORIZED = ApiError(
    401,
    "missing or wrong API key: send the server's key as `Authorization: Bearer <key>` "
    "(the openai client sends its api_key so)",
    "authentication_error",
    None,
    "invalid_api_key",
)


class BearerAuthMiddleware:
    """ASGI middleware: refuse HTTP requests without the right bearer token (lifespan passes through)."""

    def __init__(self, app: ASGIApp, token: str, on_refused: Callable[[], None] | None = None) -> None:
        if not token:
            raise ValueError("BearerAuthMiddleware.token: empty; pass the key, or leave auth off")
        self.app = app
        self._token = token
        self._on_refused = on_refused  # e.g. count the 401 in the server's metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization")
        given = bearer_token(raw.decode("latin-1") if raw is not None else None)
        if token_matches(self._token, given):
            await self.app(scope, receive, send)
            return
        if self._on_refused is not None:
            self._on_refused()
        body = json.dumps(UNAUTHORIZED.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def __repr__(self) -> str:  # never show the token
        return "BearerAuthMiddleware(token=***)"
