#!/usr/bin/env bash
# The local lab demo: installs what is needed, builds egw, then sends real packets from two pods
# through egw-gateway (AF_XDP) to a mirror server and prints each pod's egress IP as the mirror
# saw it. Everything runs in network namespaces this script creates and removes.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/setup.sh
cargo build --release --locked -p egw-gateway -p egw-lab -p egwctl
exec "$CARGO_TARGET_DIR/release/egw-lab" demo --gateway egw --gateway-bin "$CARGO_TARGET_DIR/release/egw-gateway" "$@"
