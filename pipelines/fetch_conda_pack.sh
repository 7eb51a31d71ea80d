#!/usr/bin/env bash
# Fetch the Conda pack the server image is to run in, addressed as OCI Data Science publishes packs:
# oci://BUCKET@NAMESPACE/PATH, whose last path segment is the pack's slug. It lands in the packs
# folder beside this script as <slug>.tar.gz, where build_images.sh finds it. No URI: nothing to
# fetch, and the images use the server's own environment.
# Usage: bash pipelines/fetch_conda_pack.sh [URI]   (from the repository root; OCI CLI on PATH,
# authenticated as the build run: OCI_CLI_AUTH=resource_principal)
set -euo pipefail
uri="${1:-}"
[ -z "$uri" ] && exit 0
if [[ ! "$uri" =~ ^oci://([^@/]+)@([^/]+)/(.+)$ ]]; then
    echo "the Conda pack must be given as oci://BUCKET@NAMESPACE/PATH, not ${uri}" >&2
    exit 2
fi
bucket="${BASH_REMATCH[1]}" namespace="${BASH_REMATCH[2]}" object="${BASH_REMATCH[3]}"
slug="$(basename "$object")"
slug="${slug%.tar.gz}"
if [[ ! "$slug" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "the Conda pack's name must be its slug (letters, digits, . _ -), not ${slug}" >&2
    exit 2
fi
mkdir -p pipelines/packs
oci os object get --namespace "$namespace" --bucket-name "$bucket" --name "$object" \
    --file "pipelines/packs/${slug}.tar.gz"
echo "pipelines/packs/${slug}.tar.gz"
