#!/usr/bin/env bash
# Installs the pinned stack into the active Python (the Makefile calls it inside .venv).
# Horovod 0.28.1 ships as a source distribution only and does not compile against TF 2.21 as released:
# we build it once, with the XLA ops source removed from the build, and cache the wheel outside the repo.
# Optional settings (the defaults are what `make` uses):
#   DLFUSION_WHEEL_CACHE       where the built Horovod wheel is kept (default ~/.cache/dlfusion/wheels);
#                              use one folder per Horovod flavour (CPU, GPU): the wheel names are the same
#   DLFUSION_INSTALL_PROJECT=0 stop after the dependencies and Horovod: docker/Dockerfile installs the
#                              project in a later layer, so that a code change does not reinstall the stack
#   HOROVOD_GPU_OPERATIONS and other HOROVOD_* build variables in the environment reach Horovod's build
#   (docker/Dockerfile.gpu sets HOROVOD_GPU_OPERATIONS=NCCL)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${DLFUSION_WHEEL_CACHE:-$HOME/.cache/dlfusion/wheels}"
horovod_version=0.28.1
mkdir -p "$cache"

python -m pip install --upgrade "pip==25.3" wheel setuptools==80.9.0 >/dev/null
python -m pip install -r "$here/requirements.txt"

wheel=$(ls "$cache"/horovod-"$horovod_version"-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  echo "Building Horovod $horovod_version (TensorFlow + Gloo, no MPI${HOROVOD_GPU_OPERATIONS:+, GPU operations: $HOROVOD_GPU_OPERATIONS}); about 5 minutes on 2 cores..."
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  python -m pip download --no-deps --no-binary :all: "horovod==$horovod_version" -d "$build" >/dev/null
  tar -xzf "$build"/horovod-"$horovod_version".tar.gz -C "$build"
  src="$build/horovod-$horovod_version"
  # xla_mpi_ops.cc includes a header TF moved; it only provides the optional XLA ops.
  sed -i '/xla_mpi_ops.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
  (cd "$src" && HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
     HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS="-j$(nproc)" \
     python -m pip wheel --no-build-isolation --no-deps -w "$cache" .)
  wheel=$(ls "$cache"/horovod-"$horovod_version"-*.whl | head -n1)
fi
# No [spark] extra: it pins pyarrow<11; what it would bring is already pinned above.
python -m pip install --no-deps "$wheel"
if [ "${DLFUSION_INSTALL_PROJECT:-1}" != 0 ]; then
  python -m pip install --no-deps -e "$here"
  # The Spark driver's class archive: every later Spark command starts about 3 s sooner (30 s, once).
  python -m pipelines.runtime.class_archive 2>/dev/null \
    || echo "warning: no Spark driver class archive made; Spark commands start as fast as without one"
fi
python -m pip check
horovodrun --check-build
