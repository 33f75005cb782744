#!/bin/sh
# The images' base when the usual one (python:3.11-slim-bookworm) can't be pulled: an
# air-gapped host, or one that reaches only a Debian mirror. debootstrap builds a minimal
# Debian bookworm (Python 3.11 from Debian's packages) and `docker import` makes it an
# image; nothing comes from a registry.
#   docker/base.sh [TAG]          # default cutout-base:bookworm; a no-op when TAG exists
# Settings: CUTOUT_DEBIAN_MIRROR (default: the mirror apt uses here, else deb.debian.org).
set -eu
TAG=${1:-cutout-base:bookworm}
if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base: $TAG exists"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
MIRROR=${CUTOUT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/cutout-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT

# minbase: only the Essential packages and apt; python3-venv brings ensurepip's wheels
# (the build stage makes its venv with them); the runtime needs nothing else from Debian:
# torch, OpenCV and Pillow bring their own libraries in their wheels.
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS" "$MIRROR"
# What a container never reads: the package cache and lists, docs, man pages, locales.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* \
       "$ROOTFS"/usr/share/info/*
# `python` as the python:3.11 images have it, so the Dockerfiles read the same on both bases.
ln -sf python3 "$ROOTFS"/usr/bin/python
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$TAG"
docker image ls "$TAG"
