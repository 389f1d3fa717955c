#!/usr/bin/env bash
# Runs every vecnet test. The end-to-end tests drive real TCP/UDP through TAPs in network
# namespaces they create, with real clients, so they need root and a few system packages; this
# script installs the missing ones (Debian) first.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in iproute2 curl iperf3 iputils-ping etcd-server etcd-client openssl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi

# The end-to-end tests run the vecnet-cni and vecnetctl binaries next to vecnetd.
cargo build --workspace --locked
cargo test --workspace --locked
