"""constraints.txt pins what make test last passed with (``make lock``): a fresh clone
installs those versions, not whatever was released since. A dependency added to or
narrowed in pyproject.toml without re-pinning would install unpinned, or not at all."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() and version.strip(), f"constraints.txt:{number}: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    pins = _pins()
    problems = []
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name}: not pinned")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}: pinned {pinned}, wanted {requirement.specifier}")
    assert not problems, "run make lock: " + "; ".join(problems)


def test_the_build_and_the_image_install_the_pins() -> None:
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    containerfile = (ROOT / "Containerfile").read_text()
    assert "-c constraints.txt" in containerfile and "constraints.txt ./" in containerfile
