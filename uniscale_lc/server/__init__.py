"""`uniscale-lc serve`: the router behind an OpenAI-compatible HTTP API (optional extra `[server]`).

`openai_schema` (request parsing), `openai_responses` (response and stream-chunk building) and `metrics` are
pure and import nothing heavy; `app` needs starlette and `cli` runs uvicorn, both imported only when a server
is built.
See docs/server.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'uniscale_lc.server' has no attribute {name!r}")
