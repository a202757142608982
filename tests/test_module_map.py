"""docs/modules.md names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_module_map_lists_every_module() -> None:
    package = ROOT / "uniscale_lc"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"}
    listed = set(re.findall(r"^\| `([^`]+\.py)` \|", (ROOT / "docs" / "modules.md").read_text(), re.MULTILINE))
    assert modules - listed == set(), "add these modules to docs/modules.md"
    assert listed - modules == set(), "docs/modules.md lists modules that no longer exist"
