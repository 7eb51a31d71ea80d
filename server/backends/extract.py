"""An OCI Data Science artifact zip extracted so that it cannot escape its folder or explode: member
paths and links checked (no member both a file and a folder), the required members present, and the
bytes that really come out counted against the limit (the sizes in the zip's directory can lie)."""

from __future__ import annotations

import errno
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InvalidArtifact, PayloadTooLarge

REQUIRED_MEMBERS = ("score.py", "runtime.yaml")
MAX_MEMBERS = 10_000
_CHUNK = 1024 * 1024
_SHOWN = 80  # characters of a member's name an error repeats


def extract_artifact(artifact_zip: Path, dest: Path, max_bytes: int) -> None:
    """Extract an OCI Data Science artifact zip after checking it cannot escape `dest` or explode."""
    if not zipfile.is_zipfile(artifact_zip):
        raise InvalidArtifact("the artifact is not a zip file")
    try:
        with zipfile.ZipFile(artifact_zip) as archive:
            members = archive.infolist()
            _check_members(members, max_bytes)
            budget = max_bytes
            for member in members:
                try:
                    budget = _extract_member(archive, member, dest, budget, max_bytes)
                except OSError as exc:
                    if exc.errno != errno.ENAMETOOLONG:
                        raise
                    raise _refused("a member name longer than the file system allows", member.filename) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, UnicodeDecodeError) as exc:
        raise InvalidArtifact(f"the artifact zip cannot be read: {exc}") from None


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, dest: Path, budget: int,
                    max_bytes: int) -> int:
    """Write one member under `dest`; the byte budget left after it."""
    path = dest.joinpath(*PurePosixPath(member.filename).parts)
    if member.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        return budget
    path.parent.mkdir(parents=True, exist_ok=True)
    # Sizes in the zip directory can lie; count what actually comes out.
    with archive.open(member) as src, open(path, "wb") as out:
        while chunk := src.read(_CHUNK):
            budget -= len(chunk)
            if budget < 0:
                raise _too_large(max_bytes)
            out.write(chunk)
    return budget


def _check_members(members: list[zipfile.ZipInfo], max_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise InvalidArtifact(f"the artifact has {len(members)} members; at most {MAX_MEMBERS} are allowed")
    files, folders = {}, {}  # path parts -> the member's name
    for member in members:
        name = member.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in name or not parts:
            raise _refused("an unsafe member path", name)
        if stat.S_ISLNK(member.external_attr >> 16):
            raise _refused("a symbolic link", name)
        (folders if member.is_dir() else files)[parts] = name
        for depth in range(1, len(parts)):
            folders.setdefault(parts[:depth], name)
    for parts, name in files.items():
        if parts in folders:
            raise _refused(f"a file that {folders[parts][:_SHOWN]!r} needs as a folder", name)
    if sum(m.file_size for m in members) > max_bytes:
        raise _too_large(max_bytes)
    top_level = {m.filename for m in members if not m.is_dir() and "/" not in m.filename}
    missing = [name for name in REQUIRED_MEMBERS if name not in top_level]
    if missing:
        raise InvalidArtifact(
            f"the artifact lacks {' and '.join(missing)} at the top level of the zip", missing=missing
        )


def _refused(what: str, name: str) -> InvalidArtifact:
    shown = name if len(name) <= _SHOWN else name[:_SHOWN] + "..."
    return InvalidArtifact(f"the artifact has {what}: {shown!r}", member=shown)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the artifact expands past the limit of {max_bytes} bytes", limit=max_bytes)
