#!/usr/bin/env bash
# Packs a self-contained charm: build/etcd/ (charm files + bin/etcd-charm) and build/etcd.charm
# (the same as a zip, as charmcraft would produce).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -p etcd-charm -q
rm -rf build/etcd build/etcd.charm
mkdir -p build/etcd/bin
cp metadata.yaml config.yaml actions.yaml charmcraft.yaml dispatch build/etcd/
cp -a hooks actions build/etcd/
cp target/release/etcd-charm build/etcd/bin/
(cd build/etcd && python3 -c "
import os, zipfile
with zipfile.ZipFile('../etcd.charm', 'w', zipfile.ZIP_DEFLATED) as z:
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
echo "packed build/etcd and build/etcd.charm"
