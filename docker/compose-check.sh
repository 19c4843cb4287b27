#!/usr/bin/env bash
# make compose-check: validate docker/docker-compose.yml with docker/.env.example (syntax, schema,
# interpolation; every required credential is set). Nothing is started. Installs Debian's
# docker-compose (1.29) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "compose-check: docker-compose is missing (apt-get install docker-compose)" >&2; exit 1; }
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null
fi
compose=(docker-compose -f docker/docker-compose.yml --env-file docker/.env.example)
"${compose[@]}" config -q
services=$("${compose[@]}" config --services | sort | tr '\n' ' ')
expected="master minio minio-init mlflow postgres submit worker-1 worker-2 "
if [ "$services" != "$expected" ]; then
  echo "compose-check: services are '$services', expected '$expected'" >&2
  exit 1
fi
# Without the env file every credential must be refused (the ${VAR:?} form), not defaulted.
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
if out=$(env -i PATH="$PATH" docker-compose -f docker/docker-compose.yml --env-file "$empty" config -q 2>&1); then
  echo "compose-check: the compose file accepted a run without credentials" >&2
  exit 1
elif ! grep -q "set in the env file" <<<"$out"; then
  echo "compose-check: without an env file it failed for another reason: $out" >&2
  exit 1
fi
echo "compose-check: docker/docker-compose.yml is valid with docker/.env.example ($(docker-compose version --short)); services: $services"
