#!/bin/sh
# Build-time only: run a command with pip pointed at one index and at docker/wheels.
#   with-index URL COMMAND...     URL "none": the wheels directory alone (air-gapped)
# The CA bundle, when the build passes the secret `ca`, is pip's (a TLS-inspecting proxy).
set -eu
index=$1
shift
if [ "$index" = none ]; then
    export PIP_NO_INDEX=1
else
    export PIP_INDEX_URL="$index"
fi
# docker/wheels, bind-mounted at /wheels by the RUN steps, is searched with the index (pip takes
# the best match of both: the local +cpu build of the same torch version wins).
if [ -d /wheels ]; then
    export PIP_FIND_LINKS=/wheels
fi
if [ -s /run/secrets/ca ]; then
    export PIP_CERT=/run/secrets/ca
fi
exec "$@"
