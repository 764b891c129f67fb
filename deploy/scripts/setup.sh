#!/usr/bin/env bash
# Installs what building and testing egw needs on Debian 12, idempotently: Debian packages for the
# XDP program (clang, libbpf headers), the lab (iproute2, nftables, ethtool, iperf3) and the tests
# (bpftool, xdp-tools), and checks for a Rust toolchain new enough for the workspace.
# Sourced by demo.sh and test-all.sh; safe to run again.
set -euo pipefail

packages=(
  build-essential pkg-config git ca-certificates curl
  clang llvm libbpf-dev linux-libc-dev
  iproute2 nftables ethtool iperf3 iputils-ping procps util-linux
  bpftool xdp-tools
)

if [ "$(id -u)" -ne 0 ]; then
  echo "egw setup: run as root (the lab creates network namespaces and loads XDP programs)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "egw setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: use the toolchain on PATH (rustup's usual location first); install rustup only if absent.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "egw setup: no Rust toolchain found; installing rustup (stable)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${rust_minor:-0}" -lt 85 ]; then
  echo "egw setup: rustc $(rustc --version) is too old; egw needs 1.85 or newer" >&2
  exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/egw-target}"
