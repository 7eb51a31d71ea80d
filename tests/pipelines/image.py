"""What pipelines/Containerfile says, read as Docker reads it (continuation lines joined)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "pipelines" / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in file order, comments dropped."""
    joined = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def preamble() -> list[tuple[str, str]]:
    """The instructions before the first FROM (the ARGs every FROM may use)."""
    found = instructions()
    return found[:[keyword for keyword, _ in found].index("FROM")]


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (the ARGs before the first FROM are left out)."""
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def final_env() -> dict[str, str]:
    """The environment the final image gives the server (its ENV instructions, later ones winning)."""
    env: dict[str, str] = {}
    for keyword, rest in stages()[-1]:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env
