"""`uniscale-lc serve MODULE:ATTR`: run the OpenAI-compatible server over a router built in Python code.

ATTR names a `Router`, a `UniScaleChat` (its `.router` is served) or a function of no arguments that
returns one. Configuration stays Python objects; the command line only says where to find them and where to
listen. starlette and uvicorn are imported only when the command runs (extra `[server]`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

_ROUTER_METHODS = ("acomplete", "astream", "aroute", "afeedback", "stats", "aclose")
INSTALL_HINT = "the server needs its extra: pip install 'uniscale-lc[server]'"


def _import_module(name: str) -> Any:
    """A module by dotted name (the current directory is importable, as with uvicorn) or by file path."""
    if name.endswith(".py") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"serve.target: {name} is not a file; give MODULE:ATTR or path/to/file.py:ATTR")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"serve.target: cannot load {name} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise ConfigError(
                f"serve.target: no module {name!r}; give MODULE:ATTR importable from {os.getcwd()} "
                "(or a file path, e.g. examples/serve_demo.py:router)"
            ) from None
        raise


def as_router(value: Any, where: str) -> Any:
    """The Router behind `value`: a Router itself, a UniScaleChat's `.router`, or what a factory returns."""
    if callable(value) and not _is_router(value) and not hasattr(value, "router"):
        value = value()
    inner = getattr(value, "router", None)
    if inner is not None and _is_router(inner):
        return inner
    if _is_router(value):
        return value
    raise ConfigError(
        f"serve.target: {where} is a {type(value).__name__}; point it at a uniscale_lc Router, a UniScaleChat, "
        "or a function of no arguments returning one"
    )


def _is_router(value: Any) -> bool:
    return all(callable(getattr(value, method, None)) for method in _ROUTER_METHODS)


def load_target(target: str) -> Any:
    """Resolve `MODULE:ATTR` (ATTR may be dotted) to a Router."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"serve.target: got {target!r}; give MODULE:ATTR, e.g. myapp.routing:router")
    value: Any = _import_module(module_name)
    for part in attr.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"serve.target: {module_name} has no attribute {attr!r}")
        value = getattr(value, part)
    return as_router(value, target)


def api_key_from_env(name: str | None) -> str | None:
    """The bearer token from the environment variable `name` (never from the command line, where `ps` shows it)."""
    if name is None:
        return None
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(
            f"serve.api_key_env: the environment variable {name} is unset or empty; export it or leave --api-key-env out"
        )
    return value


def add_subparser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a Router as an OpenAI-compatible API (needs the [server] extra)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("target", help="MODULE:ATTR of a Router, a UniScaleChat, or a function returning one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="require `Authorization: Bearer <value of $NAME>` on every endpoint but /health",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the app and run uvicorn until SIGINT/SIGTERM; shutdown flushes the router's state."""
    try:
        import uvicorn

        from .app import create_app
    except ImportError as error:
        print(f"uniscale-lc serve: {INSTALL_HINT} ({error})", file=sys.stderr)
        return 2
    try:
        api_key = api_key_from_env(args.api_key_env)
        router = load_target(args.target)
    except ConfigError as error:
        print(f"uniscale-lc serve: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(router, api_key=api_key)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")
    uvicorn.Server(config).run()
    return 0
