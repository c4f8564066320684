#!/usr/bin/env bash
# The whole test suite: fixtures (idempotent), then every Rust test of the workspace.
# Integration tests need root (namespaces, mounts, bridges), like LXD.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo build --release --workspace
# A test run that was itself killed (SIGKILL, a lost session) could not tear its models
# down: destroy what such runs left, i.e. every test controller home no controller holds.
for home in /tmp/harness-test-*; do
  [ -d "$home" ] || continue
  if flock -n "$home/controller.lock" true 2>/dev/null; then
    echo "destroying the models a killed test run left in $home"
    CHARM_HARNESS_HOME="$home" target/release/charm-harness kill-controller && rm -rf "$home"
  fi
done
# Nothing the tests made may outlive them: namespaces, bridges, machine cgroups, loop
# devices backed by a machine's files. Anything already there before the run is not theirs.
leftovers() {
  ip netns list 2>/dev/null | grep '^chb' | sed 's/ .*//;s/^/netns /' || true
  ip -o link 2>/dev/null | awk -F': ' '$2 ~ /^chb/ {sub(/@.*/, "", $2); print "link " $2}' || true
  find /sys/fs/cgroup -path '*/charm-harness/*' -prune -type d 2>/dev/null | sed 's/^/cgroup /' || true
  losetup -nl -O BACK-FILE 2>/dev/null | grep -E 'harness-test-|/var/lib/snapd/snaps/' | sed 's/^/loop /' || true
}
before=$(leftovers | sort)
if [ -n "$before" ]; then
  echo "already on this host before the tests (not counted):" >&2
  echo "$before" >&2
fi
cargo test --release --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
left=$(comm -13 <(echo "$before") <(leftovers | sort) | sed '/^$/d')
if [ -n "$left" ]; then
  echo "the tests left these behind:" >&2
  echo "$left" >&2
  exit 1
fi
