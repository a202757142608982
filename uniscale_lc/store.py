"""Persistence of learnt state: versioned JSON plus numeric arrays in one `.npz`, written atomically.

One file (a zip holding `meta.json` and numeric arrays) so that a save is a single atomic rename:
a reader sees the old state or the new one, never a mix. Nothing is pickled (`allow_pickle=False`,
object arrays refused), sizes are checked before anything is parsed, and a corrupt or truncated
file raises `StateError` without touching the good file it would have replaced.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import re
import stat
import tempfile
import tokenize
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StateError

__all__ = [
    "FORMAT",
    "MAX_STATE_BYTES",
    "VERSION",
    "load_state",
    "resolve_state_path",
    "save_state",
    "state_lock",
]

FORMAT = "uniscale-lc-state"
VERSION = 1
MAX_STATE_BYTES = 256 * 1024 * 1024
_META = "meta.json"
_ARRAY_NAME = re.compile(r"^a\d{1,9}\.npy$")
_ARRAY_KEY = "__ndarray__"
_ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float
_TEMP_SUFFIX = re.compile(r"^[a-z0-9_]{8}\.tmp$")  # what tempfile.mkstemp puts after our prefix


def _flatten(value: Any, arrays: list[np.ndarray], where: str) -> Any:
    """JSON-ready copy of a state tree with arrays replaced by references into `arrays`."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ALLOWED_KINDS:
            raise StateError(
                f"{where}: array of dtype {value.dtype} cannot be saved; only numeric arrays are stored"
            )
        arrays.append(np.ascontiguousarray(value))
        return {_ARRAY_KEY: len(arrays) - 1}
    if isinstance(value, Mapping):
        flat = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateError(f"{where}: key {key!r} is not a string")
            if key == _ARRAY_KEY:
                raise StateError(f"{where}: the key {_ARRAY_KEY!r} is reserved")
            flat[key] = _flatten(item, arrays, f"{where}.{key}")
        return flat
    if isinstance(value, (list, tuple)):
        return [_flatten(item, arrays, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise StateError(f"{where}: non-finite number {value!r} cannot be saved")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise StateError(
        f"{where}: {type(value).__name__} cannot be saved; state holds only plain data and arrays"
    )


def _restore(value: Any, arrays: Mapping[int, np.ndarray], used: set[int] | None = None) -> Any:
    """Put the arrays back into the tree. Each is referenced exactly once, as `save_state` writes them: one
    array shared by many references would be copied once per reference on loading (a 197 KB file asked for
    2.8 GB), so the decoded size stays the file's unpacked size, which `load_state` has already bounded."""
    used = set() if used is None else used
    if isinstance(value, dict):
        if set(value) == {_ARRAY_KEY}:
            index = value[_ARRAY_KEY]
            if isinstance(index, bool) or not isinstance(index, int) or index not in arrays:
                raise StateError(f"meta.json refers to array {index!r}, which the file does not hold")
            if index in used:
                raise StateError(
                    f"meta.json refers to array {index} more than once; uniscale-lc writes each array once"
                )
            used.add(index)
            return arrays[index]
        return {key: _restore(item, arrays, used) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore(item, arrays, used) for item in value]
    return value


def _remove_orphaned_temporaries(target: Path) -> None:
    """Delete temporary files of writers killed mid-save, which would otherwise pile up one per crash.

    Called with the lock held: a writer creates its temporary file only while holding the lock, so any
    such file that exists now belongs to a writer that died. Without `fcntl` there is no lock, so nothing
    is removed (another live writer's file could be).
    """
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - non-POSIX
        return
    prefix = f".{target.name}."
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        for entry in entries:
            if (
                entry.name.startswith(prefix)
                and _TEMP_SUFFIX.match(entry.name[len(prefix) :])
                and entry.is_file(follow_symlinks=False)
            ):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NO_WRITE_ACCESS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def resolve_state_path(path: str | os.PathLike[str]) -> Path:
    """The file a state path names: symlinks are followed (docs/reliability.md, "Symlinks"), so a save
    replaces the link's target and the link stays; the lock and temporary files live beside the target."""
    return Path(os.path.realpath(os.fspath(path)))


def _open_lock(lock_path: Path, *, for_write: bool) -> int | None:
    """A descriptor of the lock file, never through a symlink and only on a regular file.

    For loading, a folder without write access (a read-only filesystem) needs no lock file: None then, and
    the single open-and-read of the state file is still atomic against a writer's rename.
    """
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StateError(
                f"state lock {lock_path} is a symbolic link; uniscale-lc never writes through one. Remove it"
            ) from None
        if for_write or error.errno not in _NO_WRITE_ACCESS:
            raise
        try:  # an existing lock can still be shared from a read-only descriptor
            descriptor = os.open(lock_path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
        except OSError:
            return None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise StateError(f"state lock {lock_path} is not a regular file; remove it")
    return descriptor


@contextlib.contextmanager
def state_lock(path: Path, *, for_write: bool = True) -> Iterator[None]:
    """Exclusive advisory lock on `<path>.lock`, so two processes never interleave save and load."""
    descriptor = _open_lock(path.with_name(path.name + ".lock"), for_write=for_write)
    if descriptor is None:
        yield
        return
    try:
        try:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX: the atomic rename still prevents torn files
            pass
        try:
            yield
        finally:
            with contextlib.suppress(ImportError, OSError):
                import fcntl

                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _not_regular(path: Path) -> str | None:
    """What `path` is when it exists and is not a regular file (a FIFO would hang a reader), else None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device or other special file"


def save_state(path: str | os.PathLike[str], tree: Mapping[str, Any]) -> Path:
    """Write `tree` to `path` atomically (temp file in the same folder, fsync, rename, fsync folder)."""
    target = resolve_state_path(path)
    if target.is_dir():
        raise StateError(
            f"state_path: {target} is a directory; give a file path such as {target / 'uniscale.npz'}"
        )
    kind = _not_regular(target)
    if kind is not None:
        raise StateError(f"state_path: {target} is {kind}, not a regular file; point state_path at a file")
    arrays: list[np.ndarray] = []
    meta = {"format": FORMAT, "version": VERSION, "state": _flatten(dict(tree), arrays, "state")}
    meta_bytes = json.dumps(meta, allow_nan=False, separators=(",", ":")).encode("utf-8")
    buffer = io.BytesIO()
    members: dict[str, np.ndarray] = {f"a{index}": array for index, array in enumerate(arrays)}
    members[_META.removesuffix(".json")] = np.frombuffer(meta_bytes, dtype=np.uint8)
    np.savez(buffer, **members)  # type: ignore[arg-type]
    payload = buffer.getvalue()
    if len(payload) > MAX_STATE_BYTES:
        raise StateError(
            f"state is {len(payload)} bytes, over the {MAX_STATE_BYTES}-byte limit; prune removed arms"
        )
    try:
        _write_atomically(target, payload)
    except OSError as exc:  # a full disk, a read-only folder, a vanished mount: the old file is intact
        code = errno.errorcode.get(exc.errno or 0, "")
        raise StateError(
            f"saving state to {target} failed: {exc.strerror or exc}{f' ({code})' if code else ''}; the "
            "previous file is unchanged. Free space or fix the folder's permissions"
        ) from None
    return target


def _write_atomically(target: Path, payload: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with state_lock(target):
        _remove_orphaned_temporaries(target)
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        with contextlib.suppress(OSError):
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


def _read_capped(source: Path, limit: int, fix: str) -> bytes:
    """The whole file in one open and read (so a concurrent rename cannot mix two files), at most `limit`.

    Opened non-blocking and checked to be a regular file on the open descriptor: a FIFO swapped in after the
    first check cannot hang the reader.
    """
    descriptor = os.open(source, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    with os.fdopen(descriptor, "rb") as handle:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise StateError(f"state file {source} is not a regular file; point state_path at a file")
        # read(n) allocates n bytes up front: ask for the file's size (+1 to see growth), not the limit.
        data = handle.read(min(limit, status.st_size) + 1)
    if len(data) > limit:
        raise StateError(f"state file {source} is over the {limit}-byte limit; {fix}")
    return data


def _check_array_headers(archive: zipfile.ZipFile, source: Path, fix: str) -> None:
    """Refuse before loading any array whose header declares a non-numeric dtype or more data than
    its member holds: numpy allocates the declared shape up front, so a 100-byte member could
    otherwise ask for terabytes."""
    for info in archive.infolist():
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise StateError(
                    f"state file {source}: member {info.filename} has npy version {version}; {fix}"
                )
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            try:
                shape, _, dtype = read_header(member)
            except (SyntaxError, tokenize.TokenError, TypeError, ValueError, RecursionError, MemoryError):
                # numpy parses the header (a Python dict literal) with tokenize and ast.literal_eval.
                raise StateError(
                    f"state file {source}: member {info.filename} has a corrupt header; {fix}"
                ) from None
        if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject:
            raise StateError(f"state file {source}: member {info.filename} has dtype {dtype}; {fix}")
        declared = math.prod(shape) * dtype.itemsize
        if declared > info.file_size:
            raise StateError(
                f"state file {source}: member {info.filename} declares {declared} bytes but holds "
                f"{info.file_size}; {fix}"
            )


def load_state(path: str | os.PathLike[str], *, max_bytes: int = MAX_STATE_BYTES) -> dict[str, Any]:
    """Read a state tree saved by `save_state`; `StateError` with the fix for anything unusable."""
    source = resolve_state_path(path)
    fix = "restore a backup, or delete the file to start learning afresh"
    try:
        size = source.stat().st_size
    except FileNotFoundError:
        raise StateError(f"state file {source} does not exist") from None
    except OSError as error:
        raise StateError(f"state file {source} cannot be read ({type(error).__name__}); {fix}") from None
    kind = _not_regular(source)
    if kind is not None:
        raise StateError(f"state file {source} is {kind}, not a regular file; point state_path at a file")
    if size > max_bytes:
        raise StateError(f"state file {source} is {size} bytes, over the {max_bytes}-byte limit; {fix}")
    try:
        with state_lock(source, for_write=False):  # no write access needed: a read-only folder loads
            data = _read_capped(source, max_bytes, fix)
    except OSError as error:  # the real cause (permissions, I/O), not "corrupt"
        raise StateError(
            f"state file {source} cannot be read ({type(error).__name__}: {error.strerror or error})"
        ) from None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = {info.filename for info in infos}
            if "meta.npy" not in names:
                raise StateError(f"state file {source} has no meta.json member; {fix}")
            unexpected = sorted(name for name in names if name != "meta.npy" and not _ARRAY_NAME.match(name))
            if unexpected:
                raise StateError(f"state file {source} holds unexpected members {unexpected[:3]}; {fix}")
            if sum(info.file_size for info in infos) > max_bytes:
                raise StateError(f"state file {source} unpacks to more than {max_bytes} bytes; {fix}")
            _check_array_headers(archive, source, fix)
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            meta_bytes = stored["meta"].tobytes()
            arrays: dict[int, np.ndarray] = {}
            for name in stored.files:
                if name == "meta":
                    continue
                array = stored[name]
                if array.dtype.kind not in _ALLOWED_KINDS:
                    raise StateError(f"state file {source}: member {name} has dtype {array.dtype}; {fix}")
                arrays[int(name[1:])] = array
    except StateError:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError, zipfile.LargeZipFile) as error:
        raise StateError(
            f"state file {source} is truncated or corrupt ({type(error).__name__}); {fix}"
        ) from None
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StateError(
            f"state file {source}: meta.json is not valid JSON ({error.msg if hasattr(error, 'msg') else error}); {fix}"
        ) from None
    except RecursionError:
        raise StateError(f"state file {source}: meta.json is nested too deeply; {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StateError(f"state file {source} is not a uniscale-lc state file; {fix}")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StateError(f"state file {source} has version {version!r}, which no uniscale-lc writes; {fix}")
    if version > VERSION:
        raise StateError(
            f"state file {source} has version {version!r}; this uniscale-lc reads version {VERSION} and older. "
            "Upgrade uniscale-lc, or delete the file to start afresh"
        )
    state = meta.get("state")
    if not isinstance(state, dict):
        raise StateError(f"state file {source}: meta.json has no state object; {fix}")
    try:
        restored: dict[str, Any] = _restore(state, arrays)
    except RecursionError:
        raise StateError(f"state file {source}: meta.json is nested too deeply; {fix}") from None
    return restored
