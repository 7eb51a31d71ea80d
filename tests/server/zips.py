"""Hand-made artifact zips for tests: minimal score.py artifacts and hostile archives."""

from __future__ import annotations

import stat
import textwrap
import zipfile
from pathlib import Path

LONG_NAME = "m" * 300  # one path component past what file systems allow (255 bytes)
RUNTIME_YAML = "MODEL_ARTIFACT_VERSION: '3.0'\nMODEL_DEPLOYMENT:\n  INFERENCE_CONDA_ENV:\n    INFERENCE_PYTHON_VERSION: '3.11'\n"

# A score.py with its own helper module: predicts `features.VALUE` for every row.
SCORE_WITH_HELPER = """
import features

def load_model():
    return {"value": features.VALUE}

def predict(data, model=load_model()):
    return {"prediction": [model["value"] for _ in data]}
"""

SCORE_LOAD_FAILS = """
def load_model():
    raise RuntimeError("the model file is corrupt")

def predict(data, model=None):
    return {"prediction": []}
"""

SCORE_PREDICT_FAILS = """
def load_model():
    return object()

def predict(data, model=None):
    raise ZeroDivisionError("the model divides by zero")
"""

# Answers after 2.5 s: past a short MIS_PREDICT_TIMEOUT_S, or still running when a worker drains.
SCORE_SLOW = """
import time

def load_model():
    return None

def predict(data, model=None):
    time.sleep(2.5)
    return {"prediction": [1 for _ in data]}
"""


def write_zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def score_artifact(path: Path, score_py: str, **extra: str) -> Path:
    """A minimal OCI Data Science artifact: score.py, runtime.yaml and any extra files."""
    return write_zip(path, {"score.py": textwrap.dedent(score_py), "runtime.yaml": RUNTIME_YAML, **extra})


def helper_artifact(path: Path, value: int) -> Path:
    return score_artifact(path, SCORE_WITH_HELPER, **{"features.py": f"VALUE = {value}\n"})


def symlink_artifact(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("score.py", SCORE_WITH_HELPER)
        archive.writestr("runtime.yaml", RUNTIME_YAML)
        link = zipfile.ZipInfo("features.py")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return path


def bomb_artifact(path: Path, expanded_bytes: int) -> Path:
    """Compresses to a few KiB, expands to `expanded_bytes`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("score.py", SCORE_WITH_HELPER)
        archive.writestr("runtime.yaml", RUNTIME_YAML)
        archive.writestr("model.bin", bytes(expanded_bytes))
    return path


def lying_bomb_artifact(path: Path, expanded_bytes: int) -> Path:
    """A bomb whose central directory claims the big member is 1 KiB."""
    bomb_artifact(path, expanded_bytes)
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # model.bin is the last central directory entry
    assert data[entry + 46 : entry + 46 + len("model.bin")] == b"model.bin"
    data[entry + 24 : entry + 28] = (1024).to_bytes(4, "little")  # uncompressed size field
    path.write_bytes(bytes(data))
    return path


def undecodable_name_artifact(path: Path) -> Path:
    """A member name flagged UTF-8 whose bytes are not."""
    write_zip(path, {"score.py": SCORE_WITH_HELPER, "runtime.yaml": RUNTIME_YAML, "caf\u00e9.py": "x = 1"})
    path.write_bytes(path.read_bytes().replace("caf\u00e9".encode(), b"caf\xff\xfe"))
    return path


HOSTILE_KINDS = ("not a zip", "no score.py", "no runtime.yaml", "nested score.py", "absolute path", "parent path",
                 "symlink", "zip bomb", "lying zip bomb", "file and folder", "folder then file", "name too long",
                 "undecodable name")


def hostile_zips(directory: Path) -> dict[str, Path]:
    """Archives an upload must refuse, by what is wrong with them (HOSTILE_KINDS)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "not-a-zip.zip").write_bytes(b"this is plain text, not an archive")
    return {
        "not a zip": directory / "not-a-zip.zip",
        "no score.py": write_zip(directory / "no-score.zip", {"runtime.yaml": RUNTIME_YAML}),
        "no runtime.yaml": write_zip(directory / "no-runtime.zip", {"score.py": SCORE_WITH_HELPER}),
        "nested score.py": write_zip(
            directory / "nested.zip", {"model/score.py": SCORE_WITH_HELPER, "model/runtime.yaml": RUNTIME_YAML}
        ),
        "absolute path": write_zip(
            directory / "absolute.zip",
            {"score.py": SCORE_WITH_HELPER, "runtime.yaml": RUNTIME_YAML, "/tmp/evil.py": "x = 1"},
        ),
        "parent path": write_zip(
            directory / "parent.zip",
            {"score.py": SCORE_WITH_HELPER, "runtime.yaml": RUNTIME_YAML, "../../evil.py": "x = 1"},
        ),
        "symlink": symlink_artifact(directory / "symlink.zip"),
        "zip bomb": bomb_artifact(directory / "bomb.zip", 8 * 1024 * 1024),
        "lying zip bomb": lying_bomb_artifact(directory / "lying-bomb.zip", 8 * 1024 * 1024),
        "file and folder": write_zip(
            directory / "file-and-folder.zip",
            {"score.py": SCORE_WITH_HELPER, "runtime.yaml": RUNTIME_YAML, "x": "1", "x/y": "2"},
        ),
        "folder then file": write_zip(
            directory / "folder-then-file.zip",
            {"score.py": SCORE_WITH_HELPER, "runtime.yaml": RUNTIME_YAML, "x/y": "2", "x": "1"},
        ),
        "name too long": write_zip(
            directory / "long-name.zip", {"score.py": SCORE_WITH_HELPER, "runtime.yaml": RUNTIME_YAML, LONG_NAME: "1"}
        ),
        "undecodable name": undecodable_name_artifact(directory / "undecodable.zip"),
    }
