"""Print pip constraints that pin every direct dependency of pyproject.toml at its lower bound.

`make test-lowest` installs against them, so that each declared lower bound is a version the
suite has actually passed on (transitive dependencies resolve to their newest allowed). Runs on
a bare Python (the standard library only), before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def lower_bound_pins(pyproject: str) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins = []
    for line in requirements:
        name, specifiers = REQUIREMENT.match(line).groups()
        lower = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
        if len(lower) != 1:
            raise SystemExit(f"{pyproject}: '{line}' needs exactly one lower bound (>=) to be tested")
        pins.append(f"{name}=={lower[0]}")
    return pins


if __name__ == "__main__":
    print("\n".join(lower_bound_pins(sys.argv[1])))
