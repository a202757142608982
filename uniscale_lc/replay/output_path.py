"""Whether an output path can be written, asked before a long run rather than found out after it."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

__all__ = ["check_output_path"]


def check_output_path(path: Path, flag: str, example: str = "report.json") -> None:
    """Refuse, before a long run, an output path that cannot be written (a bad path used to fail after it).

    Permission bits say little (root passes every `os.access` check, and /proc or a read-only mount refuse
    files whatever the bits), so the check creates the missing directories and opens the file for append;
    a file that did not exist before is removed again.
    """
    if path.is_dir():
        raise ConfigError(f"{flag}: {path} is a directory; give a file name, e.g. {path / example}")
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{flag}: {existing} is not a directory; choose a path under a directory")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise ConfigError(
            f"{flag}: cannot write {path} ({error.strerror or error}); choose a path in a writable directory"
        ) from None
    if not existed:
        path.unlink()
