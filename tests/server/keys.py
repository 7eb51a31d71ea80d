"""API keys files for tests, laid out as the kubelet writes a mounted Secret: the file is a symlink
through `..data`, and an update swaps `..data` to a new directory in one rename."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

FILE = "keys.json"


def new_key() -> str:
    return secrets.token_urlsafe(32)  # throwaway, never written anywhere but tmp_path


def keys_document(keys: dict[str, tuple[list[str], str]]) -> str:
    return json.dumps({"keys": [{"name": name, "scopes": scopes, "key": key} for name, (scopes, key) in keys.items()]})


def mount_keys(directory: Path, text: str) -> Path:
    """(Re)write the mounted Secret holding `text`; returns the path MIS_API_KEYS_FILE names."""
    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"..{secrets.token_hex(4)}"
    version.mkdir()
    (version / FILE).write_text(text)
    swap = directory / "..data_tmp"
    os.symlink(version.name, swap)
    os.replace(swap, directory / "..data")
    if not (directory / FILE).is_symlink():
        os.symlink(f"..data/{FILE}", directory / FILE)
    return directory / FILE
