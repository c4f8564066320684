#!/usr/bin/env bash
# The whole test suite: fixtures (idempotent), then every Rust test of the workspace.
# Integration tests need root (namespaces, mounts, bridges), like LXD.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo build --release --workspace
cargo test --release --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
# Nothing the tests made may outlive them: namespaces, bridges, machine cgroups, loop
# devices backed by a machine's files.
left_ns=$(ip netns list 2>/dev/null | grep -c '^chb' || true)
left_br=$(ip -o link 2>/dev/null | grep -c ': chb' || true)
left_cg=$(find /sys/fs/cgroup -path '*/charm-harness/*' -type d 2>/dev/null | wc -l)
left_loop=$(losetup -nl -O BACK-FILE 2>/dev/null | grep -cE 'harness-test-|/var/lib/snapd/snaps/' || true)
if [ "$left_ns" != 0 ] || [ "$left_br" != 0 ] || [ "$left_cg" != 0 ] || [ "$left_loop" != 0 ]; then
  echo "the tests left $left_ns network namespace(s), $left_br link(s), $left_cg cgroup(s) and $left_loop loop device(s) behind" >&2
  exit 1
fi
