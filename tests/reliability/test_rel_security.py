"""Security: no API key in anything produced; state loading executes no code and stays within its path."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import threading
import traceback
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage
from reliability_helpers import BACKUP, PRIMARY, SERVER_FAULTS, fast_retry, fault_models

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient
from uniscale_lc.errors import StateError, UniScaleError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.store import load_state, save_state
from uniscale_lc.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(180)

# Distinctive fake keys: one OpenAI-shaped (caught by the key patterns too), one of no known shape (only
# the exact-value redaction can catch it), one for an endpoint that echoes the key back in its error.
KEYS = {
    "UNISCALE_TEST_KEY_PRIMARY": "sk-uniscaleFAKEprimary7Q2W9E4R1T6Y",
    "UNISCALE_TEST_KEY_BACKUP": "zzFAKEbackupKEY-4417-qwerty-uniscale",
    "UNISCALE_TEST_KEY_ECHO": "echoFAKEkey.9931.uniscale.ZXCVB",
}


class _EchoingHandler(BaseHTTPRequestHandler):
    """A provider that answers 401 quoting the key it received, as some real providers do."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        body = json.dumps(
            {
                "error": {
                    "message": f"Incorrect API key provided: {key}",
                    "type": "invalid_request_error",
                    "code": 401,
                }
            }
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingHandler)
    thread = threading.Thread(target=server.serve_forever, name="echo-key-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(5)


class _Everything(logging.Handler):
    """Keeps every record of every logger, at every level, fully formatted (with tracebacks)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _exception_text(error: BaseException) -> str:
    parts = ["".join(traceback.format_exception(error)), repr(error), str(error)]
    for _, inner in getattr(error, "errors", []):
        parts += [repr(inner), str(inner), "".join(traceback.format_exception(inner))]
    return "\n".join(parts)


def test_no_api_key_in_logs_errors_metadata_state_or_repr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, echo_server: str, capfd: pytest.CaptureFixture[str]
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    handler = _Everything()
    loggers = [
        logging.getLogger(),
        *(
            logging.getLogger(n)
            for n in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx", "aiohttp")
        ),
    ]
    previous = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    produced: list[str] = []
    state_path = tmp_path / "state" / "router.npz"
    try:
        with OpenAIServer(models=fault_models()) as server:
            specs = [
                ModelSpec(
                    model=PRIMARY,
                    api_base=server.api_base,
                    api_key_env="UNISCALE_TEST_KEY_PRIMARY",
                    timeout_s=0.3,
                    gpu_usd_per_hour=0.0,
                ),
                ModelSpec(
                    model=BACKUP,
                    api_base=server.api_base,
                    api_key_env="UNISCALE_TEST_KEY_BACKUP",
                    timeout_s=0.3,
                    gpu_usd_per_hour=0.0,
                ),
                ModelSpec(
                    model="echo",
                    api_base=echo_server,
                    api_key_env="UNISCALE_TEST_KEY_ECHO",
                    timeout_s=0.3,
                    gpu_usd_per_hour=0.0,
                ),
            ]
            chat = UniScaleChat(
                models=specs,
                client=ModelClient(retry=fast_retry(), seed=0),
                state_path=str(state_path),
                max_fallbacks=2,
            )
            produced += [
                repr(chat),
                str(chat),
                repr(specs),
                json.dumps(chat._identifying_params, default=str),
            ]
            requests = 0
            for fault in (None, *SERVER_FAULTS):
                server.set_failure(PRIMARY, fault)  # type: ignore[arg-type]
                server.set_failure(BACKUP, fault)  # type: ignore[arg-type]
                for index in range(3):
                    requests += 1
                    try:
                        message = chat.invoke(f"{fault} question {index}")
                    except UniScaleError as error:
                        produced.append(_exception_text(error))
                        continue
                    assert isinstance(message, AIMessage)
                    produced += [repr(message), json.dumps(message.response_metadata, default=str)]
                    chat.feedback(message, 0.5)
            try:
                list(chat.stream("stream please"))
            except UniScaleError as error:
                produced.append(_exception_text(error))
            produced += [json.dumps(chat.stats(), default=str), json.dumps(chat.explain("why"), default=str)]
            # The keys did reach the endpoints (so the scan below proves redaction, not absence).
            sent = server.last_request_headers(BACKUP).get("Authorization", "")
            assert KEYS["UNISCALE_TEST_KEY_BACKUP"] in sent
        chat.save()
        # Stop the background autosave before listing the folder: a save it has in flight holds a temporary
        # file beside the state (this was a flaky ".tmp file seen" failure).
        chat.close()
    finally:
        for lg, level in previous:
            lg.removeHandler(handler)
            lg.setLevel(level)
    out, err = capfd.readouterr()
    produced += [*handler.lines, out, err]
    state_bytes = state_path.read_bytes()
    scanned = "\n".join(produced)
    assert any("Incorrect API key provided" in line for line in produced), (
        "the echoing endpoint was not exercised"
    )
    for name, key in KEYS.items():
        assert key not in scanned, f"{name} leaked into logs, errors, metadata or repr"
        assert key.encode() not in state_bytes, f"{name} leaked into the saved state"
        assert key[4:20] not in scanned, f"part of {name} leaked"
    # Only the state file and its lock were written, beside each other; nothing in the working folder.
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written == ["state", "state/router.npz", "state/router.npz.lock"]
    print(
        f"\n{requests} requests over {len(SERVER_FAULTS) + 1} fault settings, {len(handler.lines)} log lines, "
        f"{len(state_bytes)} state bytes, {len(scanned)} characters of output scanned: 0 key fragments"
    )


class _Marker:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def _npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _meta(state: dict[str, Any]) -> bytes:
    text = json.dumps({"format": "uniscale-lc-state", "version": 1, "state": state}).encode()
    return _npy(np.frombuffer(text, dtype=np.uint8))


def test_loading_never_executes_code(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = np.empty(1, dtype=object)
    payload[0] = _Marker(str(marker))
    attacks = {
        "object-array": _npz({"meta.npy": _meta({"x": {"__ndarray__": 0}}), "a0.npy": _npy(payload)}),
        "pickled-meta": _npz({"meta.npy": _npy(payload)}),
        "raw-pickle": pickle.dumps(_Marker(str(marker))),
        "extra-member": _npz({"meta.npy": _meta({}), "evil.pkl": pickle.dumps(_Marker(str(marker)))}),
    }
    for name, blob in attacks.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(blob)
        with pytest.raises(StateError):
            load_state(path)
        assert not marker.exists(), f"{name}: loading ran code"


def test_oversized_and_bomb_files_are_refused_before_parsing(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.npz"
    with open(sparse, "wb") as handle:  # 300 MiB, sparse: the size check refuses it before any read
        handle.truncate(300 * 1024 * 1024)
    with pytest.raises(StateError, match="over the"):
        load_state(sparse)
    bomb = tmp_path / "bomb.npz"  # 64 MiB of zeros compressed to ~64 KiB
    bomb.write_bytes(_npz({"meta.npy": _meta({"x": {"__ndarray__": 0}}), "a0.npy": _npy(np.zeros(8 << 20))}))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(StateError, match="unpacks to more than"):
        load_state(bomb, max_bytes=8 << 20)
    liar = tmp_path / "liar.npz"  # a header declaring 800 GB in a member of a few bytes
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**11,)})
    liar.write_bytes(
        _npz({"meta.npy": _meta({"x": {"__ndarray__": 0}}), "a0.npy": header.getvalue() + bytes(8)})
    )
    with pytest.raises(StateError, match="declares"):
        load_state(liar)


def test_saving_writes_only_the_configured_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "deep" / "er" / "state.npz"
    for step in range(5):
        save_state(target, {"step": step, "matrix": np.eye(3) * step})
    load_state(target)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert written == ["deep", "deep/er", "deep/er/state.npz", "deep/er/state.npz.lock"]
    with pytest.raises(StateError, match="directory"):
        save_state(tmp_path / "deep", {"x": 1})
    assert not os.path.exists(tmp_path / "deep" / "uniscale.npz")
