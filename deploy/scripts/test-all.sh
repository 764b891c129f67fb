#!/usr/bin/env bash
# Runs every check egw has: formatting, clippy, all unit / RFC / property / integration tests
# (the XDP and lab end-to-end tests need root: they build network namespaces), and a short smoke
# run of the engine pipeline benchmark. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/setup.sh

echo "== fmt" && cargo fmt --all -- --check
echo "== clippy" && cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build" && cargo build --workspace --bins --locked
export EGW_GATEWAY_BIN="$CARGO_TARGET_DIR/debug/egw-gateway"
export EGWCTL_BIN="$CARGO_TARGET_DIR/debug/egwctl"
echo "== test" && cargo test --workspace --locked
echo "== bench smoke" && cargo bench --locked -p egw-bench --bench pipeline -- --quick
