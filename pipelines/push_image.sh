#!/usr/bin/env bash
# Push a local image to OCIR and print the digest the registry gave it (sha256:...), nothing else
# on stdout. Logs in with the build run's resource principal: OCIR exchanges a signed request for a
# short-lived registry token, so no user's auth token is kept anywhere.
# Usage: bash pipelines/push_image.sh LOCAL_IMAGE REGION.ocir.io/NAMESPACE/REPOSITORY:TAG
set -euo pipefail
local_image="${1:?usage: push_image.sh LOCAL_IMAGE TARGET}"
target="${2:?usage: push_image.sh LOCAL_IMAGE TARGET}"
registry="${target%%/*}"
token="$(oci raw-request --auth resource_principal --http-method GET \
    --target-uri "https://${registry}/20180419/docker/token" --query 'data.token' --raw-output)"
printf '%s' "$token" | docker login "$registry" --username BEARER_TOKEN --password-stdin >&2
docker tag "$local_image" "$target" >&2
docker push "$target" >&2
# The image may carry digests from other repositories: take the one of the repository pushed to.
digest="$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$target" | grep -F "${target%:*}@" | head -n 1)"
digest="${digest##*@}"
case "$digest" in
    sha256:*) printf '%s\n' "$digest" ;;
    *) echo "push_image.sh: no digest for $target after the push" >&2; exit 1 ;;
esac
