#!/usr/bin/env bash
# The server's Python environment, made at TARGET (the image's /opt/mis):
#  - without a Conda pack: a virtual environment with the server's requirements;
#  - with one (conda-pack's tarball, as OCI Data Science publishes them): that environment,
#    unpacked and relocated by its own bin/conda-unpack, plus only the server's own libraries,
#    installed under constraints that keep every version the pack has: its numpy, pandas,
#    scikit-learn, XGBoost and LightGBM are what the models were trained with.
# Usage: bash pipelines/make_env.sh TARGET XGBOOST [PACK]   (from the repository root)
set -euo pipefail
target="${1:?usage: make_env.sh TARGET XGBOOST [PACK]}"
xgboost="${2:?usage: make_env.sh TARGET XGBOOST [PACK]}"
pack="${3:-}"
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "$pack" ]; then
    python "$here/requirements.py" "$xgboost" > "$target.requirements.txt"
    python -m venv "$target"
    "$target/bin/pip" install --requirement "$target.requirements.txt"
else
    mkdir -p "$target"
    tar -xf "$pack" -C "$target"
    # conda-pack's conda-unpack rewrites the prefixes the environment was built at to where it is
    # now; it runs on the environment's own python.
    PATH="$target/bin:$PATH" "$target/bin/conda-unpack"
    python "$here/requirements.py" "$xgboost" --beside-pack > "$target.requirements.txt"
    # name==version lines (pip freeze writes a Conda-built package as "name @ file://...", which
    # pip refuses as a constraint)
    "$target/bin/python" -m pip list --format=freeze > "$target.constraints.txt"
    "$target/bin/python" -m pip install --constraint "$target.constraints.txt" --requirement "$target.requirements.txt"
fi
rm -f "$target.requirements.txt" "$target.constraints.txt"
