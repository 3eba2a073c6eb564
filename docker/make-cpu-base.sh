#!/bin/sh
# Makes a local CPU base image for docker/Dockerfile where Ray's GPU image cannot be pulled (no registry):
# Debian bookworm from Debian's packages (debootstrap), with what the Dockerfile relies on in Ray's image -
# Python 3.11 on PATH in an environment uid 1000 can pip-install into (Debian's system Python refuses pip,
# PEP 668), the user "ray" (uid 1000, group users) and its home, the CA bundle - this machine's own
# (CA_BUNDLE, default the host's), so that pip in a build trusts what the host trusts (a proxy's CA included).
#   sudo docker/make-cpu-base.sh [IMAGE]        (default stn-study-base:bookworm; does nothing if it exists)
# Needs root (debootstrap, chroot) and debootstrap; about 5 minutes and 400 MB.
set -eu
IMAGE=${1:-stn-study-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE exists"
    exit 0
fi
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,procps bookworm "$ROOT" "$MIRROR"
chroot "$ROOT" sh -eu -c '
    useradd --create-home --uid 1000 --gid users --shell /bin/bash ray
    python3 -m venv /home/ray/venv
    chown -R ray:users /home/ray
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /usr/share/doc/* /usr/share/man/*'
cp "$CA_BUNDLE" "$ROOT/etc/ssl/certs/ca-certificates.crt"
tar -C "$ROOT" -c . | docker import \
    --change 'ENV PATH=/home/ray/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV HOME=/home/ray' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 1000' --change 'WORKDIR /home/ray' - "$IMAGE"
echo "made $IMAGE"
