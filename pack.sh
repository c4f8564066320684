#!/usr/bin/env bash
# Packs both charms of the workspace, self-contained, into build/: build/etcd/ and
# build/easyrsa/ (charm files + bin/<binary>) and build/<name>.charm (the same as a zip, as
# charmcraft would produce). CHARM_HARNESS_CHARMHUB=$PWD/build serves them by name.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -p etcd-charm -p easyrsa-charm -q
zip_dir() {
  (cd "build/$1" && python3 -c "
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
rm -rf build/etcd build/etcd.charm build/easyrsa build/easyrsa.charm
mkdir -p build/etcd/bin build/easyrsa/bin
cp metadata.yaml config.yaml actions.yaml charmcraft.yaml dispatch build/etcd/
cp -a hooks actions build/etcd/
cp target/release/etcd-charm build/etcd/bin/
cp easyrsa/metadata.yaml easyrsa/dispatch build/easyrsa/
cp target/release/easyrsa-charm build/easyrsa/bin/
zip_dir etcd
zip_dir easyrsa
echo "packed build/etcd, build/easyrsa and their .charm files"
