#!/bin/sh
# make images: the CPU image (web, cpu worker, beat, Flower), built anywhere.
#   docker/build.sh                     # cutout-cpu:dev
#   docker/build.sh standins            # cutout-standins:dev (docker-compose.airgap.yml's Redis and S3)
# Settings (environment):
#   CUTOUT_IMAGE      the tag (default cutout-cpu:dev)
#   BASE_IMAGE        the base; default python:3.11-slim-bookworm when it is here or can be
#                     pulled, else cutout-base:bookworm from Debian packages (docker/base.sh)
#   TORCH_SPEC        default torch==2.13.0 (the Makefile's)
#   TORCH_INDEX_URL, PIP_INDEX_URL   default PyPI; "none": docker/wheels only (air-gapped)
#   CUTOUT_CA_BUNDLE  a CA bundle for pip inside the build (default: the system's, if any)
# docker/wheels/ is filled first from this host: torch's wheel as this host's pip resolves
# TORCH_SPEC (a local CPU wheel here), and the verified .onnx weights of $CUTOUT_HOME.
set -eu
cd "$(dirname "$0")/.."
WHAT=${1:-cpu}
case "$WHAT" in
cpu) TAG=${CUTOUT_IMAGE:-cutout-cpu:dev} ;;
standins) TAG=cutout-standins:dev ;;
*) echo "usage: $0 [cpu|standins]" >&2; exit 2 ;;
esac
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WHEELS=docker/wheels

# A client that builds with BuildKit: a 23+ client without the buildx plugin refuses
# DOCKER_BUILDKIT=1, while Debian's 20.10 client (/usr/bin/docker) drives the daemon's own.
DOCKER=docker
if ! docker buildx version >/dev/null 2>&1; then
    for client in /usr/bin/docker docker; do
        case "$($client version --format '{{.Client.Version}}' 2>/dev/null)" in
        18.* | 19.* | 20.*) DOCKER=$client; break ;;
        esac
    done
fi

if [ -z "${BASE_IMAGE:-}" ]; then
    if docker image inspect python:3.11-slim-bookworm >/dev/null 2>&1 || docker pull python:3.11-slim-bookworm; then
        BASE_IMAGE=python:3.11-slim-bookworm
    else
        echo "images: python:3.11-slim-bookworm can't be pulled; building the base from Debian packages"
        docker/base.sh cutout-base:bookworm
        BASE_IMAGE=cutout-base:bookworm
    fi
fi

mkdir -p "$WHEELS"
# The CPU image's wheels and weights, from this host.
if [ "$WHAT" = cpu ]; then
    pip=""
    if [ -x .venv/bin/python ]; then pip=".venv/bin/python -m pip"
    elif python3 -m pip --version >/dev/null 2>&1; then pip="python3 -m pip"
    fi
    if [ -n "$pip" ] && [ "${TORCH_INDEX_URL:-}" != none ]; then
        # The host's pip configuration decides (find-links, mirrors); the build then finds the wheel.
        $pip download --quiet --no-deps -d "$WHEELS" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC" \
            || echo "images: could not fetch $TORCH_SPEC here; the build will ask its index"
    fi
    home=${CUTOUT_HOME:-$HOME/.cache/cutout}
    for model in u2net u2netp; do
        # Checked by sha256 inside the build (cutout weights), so a stale copy is refused there.
        if [ -f "$home/weights/$model.onnx" ] && ! cmp -s "$home/weights/$model.onnx" "$WHEELS/$model.onnx"; then
            cp "$home/weights/$model.onnx" "$WHEELS/"
        fi
    done
fi

ca=${CUTOUT_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
set -- --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_SPEC=$TORCH_SPEC"
[ -n "${TORCH_INDEX_URL:-}" ] && set -- "$@" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
[ -n "${PIP_INDEX_URL:-}" ] && set -- "$@" --build-arg "PIP_INDEX_URL=$PIP_INDEX_URL"
[ -f "$ca" ] && set -- "$@" --secret "id=ca,src=$ca"
start=$(date +%s)
DOCKER_BUILDKIT=1 $DOCKER build --progress=plain -f "docker/Dockerfile.$WHAT" -t "$TAG" "$@" .
echo "images: $TAG built in $(( $(date +%s) - start )) s on $BASE_IMAGE, $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')"
