"""Offline dependency audit for `make lint`.

Checks, without network: (1) the dependency spec in pyproject.toml refuses every known-compromised
release (litellm 1.82.7 and 1.82.8, March 2026); (2) no installed distribution is one of them;
(3) every installed requirement satisfies its range. When pip-audit is installed and the network is
reachable it also runs pip-audit against the vulnerability database; without network that step is
reported as skipped, never as passed.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from packaging.version import Version

COMPROMISED = {"litellm": ["1.82.7", "1.82.8"]}
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    problems: list[str] = []
    for requirement in requirements:
        for bad in COMPROMISED.get(requirement.name, []):
            if requirement.specifier.contains(Version(bad), prereleases=True):
                problems.append(f"pyproject.toml allows compromised {requirement.name}=={bad}; require >=1.83")
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement.name} is not installed; run `make test` or `pip install -e .`")
            continue
        if installed in COMPROMISED.get(requirement.name, []):
            problems.append(f"installed {requirement.name}=={installed} is a compromised release: reinstall now")
        if not requirement.specifier.contains(Version(installed), prereleases=True):
            problems.append(f"installed {requirement.name}=={installed} is outside {requirement.specifier}")
        print(f"ok  {requirement.name}=={installed}  ({requirement.specifier})")
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    try:
        audit = subprocess.run(
            [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--timeout", "15"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if audit.returncode == 0:
            print("pip-audit: no known vulnerabilities")
        elif "ConnectionError" in audit.stderr or "Max retries" in audit.stderr or "No module named" in audit.stderr:
            print("pip-audit: skipped (not installed or no network); the offline checks above still apply")
        else:
            print(audit.stdout[-4000:])
            print(audit.stderr[-2000:], file=sys.stderr)
            problems.append("pip-audit reported vulnerabilities")
    except (subprocess.TimeoutExpired, OSError):
        print("pip-audit: skipped (timed out or unavailable)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
