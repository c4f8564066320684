#!/usr/bin/env bash
# The whole test suite: fixtures (idempotent), then every Rust test of the workspace.
# Integration tests need root (namespaces, mounts, bridges), like LXD.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo build --release --workspace
cargo test --release --workspace -- --test-threads="${TEST_THREADS:-4}"
