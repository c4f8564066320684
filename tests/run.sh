#!/usr/bin/env bash
# The whole test suite: fixtures (idempotent), then every Rust test of the workspace.
# Integration tests need root (namespaces, mounts, bridges), like LXD.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo build --release --workspace
cargo test --release --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
# Nothing the tests made may outlive them: namespaces, bridges, machine processes.
left_ns=$(ip netns list 2>/dev/null | grep -c '^chb' || true)
left_br=$(ip -o link 2>/dev/null | grep -c ': chb' || true)
if [ "$left_ns" != 0 ] || [ "$left_br" != 0 ]; then
  echo "the tests left $left_ns network namespace(s) and $left_br link(s) behind" >&2
  exit 1
fi
