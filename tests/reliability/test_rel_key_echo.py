"""A provider that echoes the key in every form a real one does: JSON-escaped (`\\/`), URL-encoded, cut
mid-key, and masked with a few of its characters kept. No fragment reaches logs, errors or callbacks."""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.errors import UniScaleError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.redact import redact

pytestmark = pytest.mark.timeout(120)

# `/` and `+` on purpose: JSON escapes the one, URLs encode both.
KEY = "Tk9/aB+cD3eF/gH+iJ4kL5mN6oP7qR8sT+uGs1"
ENV = "UNISCALE_TEST_KEY_SLASHES"
MIN_FRAGMENT = 6  # the checker looks for any run of 6 of the key's characters


def echoes(key: str) -> list[str]:
    """The forms of `key` a provider's error may carry."""
    escaped = json.dumps(key)[1:-1].replace("/", "\\/")
    return [
        f"Incorrect API key provided: {escaped}",
        f"key={quote(key, safe='')}",
        f"key (first 20): {key[:20]}",
        f"masked {key[:3]}****{key[-4:]}",
        f"Authorization: Be****{key[-2:]}",
    ]


def fragments(text: str, key: str) -> list[str]:
    """Every `MIN_FRAGMENT`-character piece of the key found in `text`, and every mask that keeps two or more
    of the key's first or last characters next to its asterisks."""
    found = [
        key[i : i + MIN_FRAGMENT]
        for i in range(len(key) - MIN_FRAGMENT + 1)
        if key[i : i + MIN_FRAGMENT] in text
    ]
    for size in range(2, MIN_FRAGMENT):
        found += [mask for mask in (key[:size] + "**", "**" + key[-size:]) if mask in text]
    return found


def test_redact_removes_every_echoed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    import uniscale_lc.redact as redact_module

    # Keys remembered by other tests in this process (some spell words, e.g. "secret") are not this one's.
    monkeypatch.setattr(redact_module, "_known", set())
    for line in echoes(KEY):
        cleaned = redact(line, [KEY])
        assert not fragments(cleaned, KEY), (line, cleaned)
    assert redact("nothing secret here: 42", [KEY]) == "nothing secret here: 42"


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        message = " | ".join(echoes(key))
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": 401}})
        data = body.encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class _Callbacks(BaseCallbackHandler):
    def __init__(self) -> None:
        self.payloads: list[str] = []

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.payloads.append(repr(error) + str(error) + json.dumps(kwargs, default=str))


@pytest.mark.parametrize("transport", ["auto", "litellm"])
def test_an_echoed_key_leaks_no_fragment(
    monkeypatch: pytest.MonkeyPatch, echo_base: str, transport: str, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV, KEY)
    handler = _Keep()
    names = ("", "LiteLLM", "LiteLLM Router", "litellm", "openai", "httpx", "httpx2", "uniscale_lc")
    loggers = [logging.getLogger(name) for name in names]
    previous = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    callbacks = _Callbacks()
    produced: list[str] = []
    try:
        spec = ModelSpec(
            model="echo", api_base=echo_base, api_key_env=ENV, timeout_s=2.0, gpu_usd_per_hour=0.0
        )
        chat = UniScaleChat(
            models=[spec], client=ModelClient(retry=RetryPolicy(max_attempts=1), seed=0, transport=transport)
        )
        for stream in (False, True):
            try:
                if stream:
                    list(chat.stream("hello", config={"callbacks": [callbacks]}))
                else:
                    chat.invoke("hello", config={"callbacks": [callbacks]})
            except UniScaleError as error:
                produced += ["".join(traceback.format_exception(error)), repr(error)]
                produced += [repr(inner) + str(inner) for _, inner in getattr(error, "errors", [])]
    finally:
        for lg, level in previous:
            lg.removeHandler(handler)
            lg.setLevel(level)
    out, err = capfd.readouterr()
    produced += [*handler.lines, *callbacks.payloads, out, err]
    scanned = "\n".join(produced)
    assert "Incorrect API key provided" in scanned, "the echoing endpoint was not exercised"
    leaked = fragments(scanned, KEY)
    print(
        f"\n{transport}: {len(handler.lines)} log lines, {len(scanned)} characters scanned, {len(leaked)} fragments"
    )
    for item in leaked[:3]:
        where = scanned.find(item)
        print("context:", scanned[max(0, where - 80) : where + 40])
    assert not leaked, leaked[:5]
