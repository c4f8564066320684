#!/usr/bin/env bash
# Packs both charms of the workspace, self-contained, as charmcraft would: OUT/etcd/ and
# OUT/easyrsa/ (the charm files, manifest.yaml with the bases from charmcraft.yaml's run-on,
# bin/<binary>) and OUT/<name>.charm (the same as a zip). OUT is build/ unless given.
# CHARM_HARNESS_CHARMHUB=$PWD/build serves them by name.
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

zip_dir() {
  (cd "$out/$1" && python3 -c "
import os, zipfile
with zipfile.ZipFile('../$1.charm', 'w', zipfile.ZIP_DEFLATED) as z:
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

# manifest.yaml as charmcraft writes it: the run-on channels of charmcraft.yaml as bases.
manifest() {
  local channels
  channels=$(sed -n '/run-on:/,$ s/^ *channel: *"\{0,1\}\([0-9.]*\)"\{0,1\}/\1/p' "$1")
  [ -n "$channels" ] || { echo "pack.sh: no run-on channels in $1" >&2; exit 1; }
  echo "# Written by pack.sh as charmcraft writes it: Juju 3 reads the charm's bases here."
  echo "charmcraft-version: 3.0.0"
  echo "charmcraft-started-at: '$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)'"
  echo "bases:"
  for c in $channels; do
    printf -- "- name: ubuntu\n  channel: '%s'\n  architectures:\n  - amd64\n" "$c"
  done
  printf "analysis:\n  attributes:\n  - name: language\n    result: unknown\n"
  printf "  - name: framework\n    result: unknown\n"
}

rm -rf "$out/etcd" "$out/etcd.charm" "$out/easyrsa" "$out/easyrsa.charm"
mkdir -p "$out/etcd/bin" "$out/easyrsa/bin"
cp metadata.yaml config.yaml actions.yaml charmcraft.yaml dispatch "$out/etcd/"
cp -a hooks actions "$out/etcd/"
cp "$bin/etcd-charm" "$out/etcd/bin/"
manifest charmcraft.yaml > "$out/etcd/manifest.yaml"
cp easyrsa/metadata.yaml easyrsa/charmcraft.yaml easyrsa/dispatch "$out/easyrsa/"
cp "$bin/easyrsa-charm" "$out/easyrsa/bin/"
manifest easyrsa/charmcraft.yaml > "$out/easyrsa/manifest.yaml"
zip_dir etcd
zip_dir easyrsa
echo "packed $out/etcd, $out/easyrsa and their .charm files (static binaries)"
