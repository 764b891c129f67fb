#!/usr/bin/env bash
# The local lab demo: installs what is needed, builds egw, then drives egw-gateway (AF_XDP) with
# egw-controller in local mode — annotated namespaces, pods, an EgressGateway and a policy in YAML
# → route table over gRPC — sends real packets from three pods to a mirror server and prints each
# pod's egress IP as the mirror saw it (one pod has no egress intent and must get none).
# Everything runs in network namespaces this script creates and removes.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/setup.sh
cargo build --release --locked -p egw-gateway -p egw-lab -p egwctl -p egw-controller
exec "$CARGO_TARGET_DIR/release/egw-lab" demo --gateway egw --controller --pods 3 --gateway-bin "$CARGO_TARGET_DIR/release/egw-gateway" "$@"
