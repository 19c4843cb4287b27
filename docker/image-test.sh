#!/usr/bin/env bash
# make image-test: build the container images with podman and prove them inside their own builds.
#   1. docker/compose-check.sh (docker-compose config with docker/.env.example);
#   2. a local base image when none can be pulled: mmdebstrap bookworm -> podman import ->
#      docker/python-standin.Containerfile (Python 3.11, venv, headers), unless DLFUSION_BASE_IMAGE is set;
#   3. docker/Dockerfile up to its `smoke` stage: `dlfusion --help` as the non-root user, no compiler in
#      the runtime image, the digits demo end to end (1 epoch, 2 Horovod ranks) with its summary
#      checked; then the runtime image is tagged (cached layers: seconds);
#   4. docker/Dockerfile.mlflow up to its `smoke` stage: the server against PostgreSQL and S3.
# Fails (nonzero) if any build or smoke step fails; prints the time of each part.
# Why inside the build: on these machines `podman build --isolation=chroot` works but `podman run`
# does not (see docker/README.md). Needs root the first time (apt-get, podman storage).
# Settings: DLFUSION_BASE_IMAGE (use this base, e.g. python:3.11-slim-bookworm, instead of the stand-in),
# IMAGE (default localhost/dlfusion), MLFLOW_IMAGE (default localhost/dlfusion-mlflow),
# CA_BUNDLE (default $PIP_CERT or $SSL_CERT_FILE: passed as the optional build secret `ca`),
# SMOKE_AGAIN=1 (run the smoke steps even if their layers are cached),
# NICE (default `nice -n 10`: the builds share the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/dlfusion}
MLFLOW_IMAGE=${MLFLOW_IMAGE:-localhost/dlfusion-mlflow}
DEBIAN_BASE=${DEBIAN_BASE:-localhost/debian:bookworm}
STANDIN=localhost/dlfusion-python-standin:3.11-slim-bookworm
read -r -a nice <<<"${NICE:-nice -n 10}"
t0=$SECONDS
times=()
mark() { times+=("$(printf '%-42s %4ds' "$1" $((SECONDS - $2)))"); }
report() {
  local status=$1
  echo
  echo "image-test: $status after $((SECONDS - t0)) s"
  for line in "${times[@]}"; do echo "  $line"; done
}
trap 'report FAILED' ERR

# -- tools ------------------------------------------------------------------------------------------
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ -z "${DLFUSION_BASE_IMAGE:-}" ]; then command -v mmdebstrap >/dev/null || missing+=(mmdebstrap); fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "image-test: missing ${missing[*]}; install them (apt-get) or run as root" >&2; exit 1; }
  echo "== installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# -- 1. compose file -------------------------------------------------------------------------------------
t=$SECONDS
echo "== compose file"
bash docker/compose-check.sh
mark "compose-check" "$t"

# -- 2. base image ---------------------------------------------------------------------------------------
t=$SECONDS
if [ -n "${DLFUSION_BASE_IMAGE:-}" ]; then
  base=$DLFUSION_BASE_IMAGE
else
  if ! podman image exists "$DEBIAN_BASE"; then
    echo "== $DEBIAN_BASE: mmdebstrap --variant=minbase bookworm (apt's configured mirror)"
    tmp=$(mktemp -d)
    "${nice[@]}" mmdebstrap --variant=minbase bookworm "$tmp/rootfs.tar"
    podman import "$tmp/rootfs.tar" "$DEBIAN_BASE"
    rm -rf "$tmp"
  fi
  echo "== $STANDIN (stand-in for python:3.11-slim-bookworm)"
  "${nice[@]}" podman build --isolation=chroot --layers --build-arg DEBIAN_BASE="$DEBIAN_BASE" \
    -f docker/python-standin.Containerfile -t "$STANDIN" docker/
  base=$STANDIN
fi
mark "base image ($base)" "$t"

build=(podman build --isolation=chroot --layers --build-arg BASE_IMAGE="$base")
# SMOKE_AGAIN=1: run the smoke steps again even when no layer changed (else podman reuses their cached
# layers, which stand for the earlier run on the same image layers).
if [ "${SMOKE_AGAIN:-0}" = 1 ]; then build+=(--build-arg "SMOKE_RUN=$(date +%s)"); fi
ca=${CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-}}}
if [ -n "$ca" ] && [ -f "$ca" ]; then build+=(--secret "id=ca,src=$ca"); fi

# The build context and the Dockerfiles: a snapshot of the checkout (tracked and untracked files, without
# what git ignores), so that edits made while the images build do not reach one build and not the next.
context=.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  context=$(mktemp -d "${TMPDIR:-/tmp}/dlfusion-image-context.XXXXXX")
  trap 'rm -rf "$context"' EXIT
  git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$context"
fi

# Each image is built first, then its smoke stage on top of it: `FROM <image stage>` reuses the same
# layers, so the tagged image is the one the smoke steps ran in (checked below).
same_image() {  # IMAGE SMOKE: the image's layers are the first layers of the smoke image
  local image smoke
  image=$(podman image inspect --format '{{range .RootFS.Layers}}{{.}} {{end}}' "$1")
  smoke=$(podman image inspect --format '{{range .RootFS.Layers}}{{.}} {{end}}' "$2")
  [[ "$smoke" == "$image"* ]] || { echo "image-test: $2 was not built on $1" >&2; return 1; }
}

# -- 3. dlfusion image -----------------------------------------------------------------------------------
t=$SECONDS
echo "== $IMAGE:cpu (docker/Dockerfile)"
"${nice[@]}" "${build[@]}" -f "$context/docker/Dockerfile" --target runtime -t "$IMAGE:cpu" "$context"
mark "dlfusion image (docker/Dockerfile)" "$t"
t=$SECONDS
echo "== $IMAGE:smoke (its smoke stage: --help, no compilers, the demo in local mode and on a Spark cluster)"
"${nice[@]}" "${build[@]}" -f "$context/docker/Dockerfile" --target smoke -t "$IMAGE:smoke" "$context"
same_image "$IMAGE:cpu" "$IMAGE:smoke"
mark "dlfusion smoke stage" "$t"

# -- 4. MLflow server image ------------------------------------------------------------------------------
t=$SECONDS
echo "== $MLFLOW_IMAGE:3.17.2 (docker/Dockerfile.mlflow) and its smoke stage (PostgreSQL + S3 + server)"
"${nice[@]}" "${build[@]}" -f "$context/docker/Dockerfile.mlflow" --target server -t "$MLFLOW_IMAGE:3.17.2" "$context"
"${nice[@]}" "${build[@]}" -f "$context/docker/Dockerfile.mlflow" --target smoke -t "$MLFLOW_IMAGE:smoke" "$context"
same_image "$MLFLOW_IMAGE:3.17.2" "$MLFLOW_IMAGE:smoke"
mark "mlflow image + smoke (docker/Dockerfile.mlflow)" "$t"

echo
podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E "^($IMAGE:cpu|$MLFLOW_IMAGE:3.17.2) " || true
report passed
