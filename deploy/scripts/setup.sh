#!/usr/bin/env bash
# Installs what building and testing egw needs on Debian 12, idempotently: Debian packages for the
# XDP program (clang, libbpf headers), the lab (iproute2, nftables, ethtool, iperf3) and the tests
# (bpftool, xdp-tools), moto server for the egw-aws tests (an EC2 API emulator, from PyPI), and
# checks for a Rust toolchain new enough for the workspace.
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

# moto server: the egw-aws tests run the real AWS SDK against it on 127.0.0.1. A pyenv or venv
# python3 takes a plain pip install; Debian's system python3 refuses one (PEP 668) unless told to.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "egw setup: installing python3 and pip"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-pip >/dev/null
fi
if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
  echo "egw setup: installing moto[server] 5 (EC2 emulator for the egw-aws tests)"
  python3 -m pip install -q 'moto[server]==5.*' \
    || python3 -m pip install -q --break-system-packages 'moto[server]==5.*'
fi

# Rust: use the toolchain on PATH (rustup's usual location first); install rustup only if absent.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "egw setup: no Rust toolchain found; installing rustup (stable)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
rust_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
# egw-aws (aws-sdk-ec2, aws-config) needs 1.94.1.
if [ "${rust_minor:-0}" -lt 94 ]; then
  echo "egw setup: rustc $(rustc --version) is too old; egw needs 1.94.1 or newer" >&2
  exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/egw-target}"
