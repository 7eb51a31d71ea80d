#!/usr/bin/env bash
# Build the CPU and GPU server images as mis-server:TAG and mis-server-gpu:TAG from
# pipelines/Containerfile, labelled with this checkout's revision and the server's version.
# Usage: bash pipelines/build_images.sh TAG   (from the repository root)
set -euo pipefail
tag="${1:?usage: build_images.sh TAG}"
revision="$(git rev-parse HEAD 2>/dev/null || echo "${OCI_TRIGGER_COMMIT_HASH:-unknown}")"
version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' server/__init__.py)"
source="${OCI_TRIGGER_SOURCE_URL:-$(git config --get remote.origin.url 2>/dev/null || echo unknown)}"
# A Conda pack fetched for this build (fetch_conda_pack.sh) is the environment of both images.
pack_args=()
for pack in pipelines/packs/*.tar.gz; do
    [ -e "$pack" ] || continue
    slug="$(basename "$pack" .tar.gz)"
    pack_args=(--build-arg "CONDA_PACK=${pack}" --build-arg "CONDA_SLUG=${slug}")
done
for variant in cpu gpu; do
    name="mis-server"
    xgboost="xgboost-cpu"
    if [ "$variant" = gpu ]; then
        name="mis-server-gpu"
        xgboost="xgboost"  # XGBoost's CUDA build
    fi
    docker build --file pipelines/Containerfile --tag "${name}:${tag}" \
        --build-arg "XGBOOST=${xgboost}" --build-arg "REVISION=${revision}" \
        --build-arg "VERSION=${version}" --build-arg "SOURCE=${source}" "${pack_args[@]}" .
done
