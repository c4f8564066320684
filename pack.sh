#!/usr/bin/env bash
# Packs both charms of the workspace, self-contained, as charmcraft would: for each platform
# of charmcraft.yaml, OUT/<name>_ubuntu@<channel>-amd64.charm with that one base in its
# manifest.yaml, as charmcraft names and writes them; and OUT/etcd/ and OUT/easyrsa/ (the
# charm files, bin/<binary>, a manifest.yaml with every platform's base) with
# OUT/<name>.charm (the same as a zip), which Juju 3.6 deploys on any of those bases and
# CHARM_HARNESS_CHARMHUB=$PWD/build serves by name. OUT is build/ unless given.
#
# The binaries are linked statically (glibc's crt-static) so that they run on every base the
# charms claim, Ubuntu 20.04's glibc 2.31 included. They are built for an explicit --target
# in their own target directory: that keeps the flag away from proc-macros and build scripts
# and leaves target/release (the dynamically linked build the tests run from) alone.
set -euo pipefail
cd "$(dirname "$0")"
out=$(realpath -m "${1:-build}")
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q \
  --target "$target" --target-dir target/static -p etcd-charm -p easyrsa-charm
bin=target/static/$target/release

# zip_dir DIR [NAME]: OUT/DIR as OUT/NAME.charm (NAME defaults to DIR).
zip_dir() {
  (cd "$out/$1" && python3 -c "
import os, zipfile
with zipfile.ZipFile('../${2:-$1}.charm', 'w', zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk('.'):
        for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = os.path.join(root, f)
            if os.path.islink(p):
                info = zipfile.ZipInfo(os.path.relpath(p, '.'))
                info.external_attr = (0o120777 << 16)
                z.writestr(info, os.readlink(p))
            else:
                z.write(p, os.path.relpath(p, '.'))
")
}

# The Ubuntu channels of charmcraft.yaml's platforms (ubuntu@<channel>:amd64), in order.
channels() {
  local c
  c=$(sed -n 's/^ *ubuntu@\([0-9.]*\):amd64: *$/\1/p' "$1")
  [ -n "$c" ] || { echo "pack.sh: no ubuntu@<channel>:amd64 platforms in $1" >&2; exit 1; }
  echo "$c"
}

# manifest.yaml as charmcraft writes it, with the bases of the channels given.
manifest() {
  echo "# Written by pack.sh as charmcraft writes it: Juju 3 reads the charm's bases here."
  echo "charmcraft-version: 4.5.0"
  echo "charmcraft-started-at: '$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)'"
  echo "bases:"
  for c in "$@"; do
    printf -- "- name: ubuntu\n  channel: '%s'\n  architectures:\n  - amd64\n" "$c"
  done
  printf "analysis:\n  attributes:\n  - name: language\n    result: unknown\n"
  printf "  - name: framework\n    result: unknown\n"
}

# pack NAME: one archive per platform, then OUT/NAME/ and OUT/NAME.charm with every base.
pack() {
  local c all
  all=$(channels "$out/$1/charmcraft.yaml")
  for c in $all; do
    manifest "$c" > "$out/$1/manifest.yaml"
    zip_dir "$1" "$1_ubuntu@$c-amd64"
  done
  # shellcheck disable=SC2086
  manifest $all > "$out/$1/manifest.yaml"
  zip_dir "$1"
}

rm -rf "$out/etcd" "$out"/etcd*.charm "$out/easyrsa" "$out"/easyrsa*.charm
mkdir -p "$out/etcd/bin" "$out/easyrsa/bin"
cp metadata.yaml config.yaml actions.yaml charmcraft.yaml dispatch "$out/etcd/"
cp -a hooks actions "$out/etcd/"
cp "$bin/etcd-charm" "$out/etcd/bin/"
cp easyrsa/metadata.yaml easyrsa/charmcraft.yaml easyrsa/dispatch "$out/easyrsa/"
cp "$bin/easyrsa-charm" "$out/easyrsa/bin/"
pack etcd
pack easyrsa
echo "packed $out/etcd, $out/easyrsa, their .charm files and one per platform (static binaries)"
