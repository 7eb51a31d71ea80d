"""The server's requirements for an image, from pyproject.toml's `server` set: printed one per line.

    python pipelines/requirements.py XGBOOST [--beside-pack]

XGBOOST replaces the set's xgboost-cpu (`xgboost` is the CUDA build, for the GPU image).
--beside-pack leaves out the libraries a Conda pack brings (numpy, pandas, scikit-learn, XGBoost,
LightGBM): the models were trained with the pack's versions, and those must stay.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PACK_LIBRARIES = {"numpy", "pandas", "scikit-learn", "xgboost", "xgboost-cpu", "lightgbm"}


def requirements(xgboost: str, beside_pack: bool) -> list[str]:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    wanted = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["server"]
    wanted = [re.sub(r"^xgboost-cpu\b", xgboost, item) for item in wanted]
    if beside_pack:
        wanted = [item for item in wanted if re.split(r"[<>=!~\[;]", item, maxsplit=1)[0].strip().lower()
                  not in PACK_LIBRARIES]
    return wanted


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--beside-pack"]):
        sys.exit(__doc__)
    print("\n".join(requirements(sys.argv[1], sys.argv[2:] == ["--beside-pack"])))
