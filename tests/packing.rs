//! The packed charms as a real Juju 3.6 would receive them: `pack.sh` writes manifest.yaml
//! with the bases of charmcraft.yaml's platforms (and one archive per platform, as
//! charmcraft does), statically linked binaries (they must run on Ubuntu
//! 20.04's older glibc, which the runbook's `--series=focal` deploys on), and `.charm`
//! archives the controller deploys by name. The controller refuses what Juju 3.6 refuses: an
//! archive without manifest bases, a base the charm does not list, a base Juju no longer
//! deploys.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::*;

/// The controller's CLI with its charm store set to `store`, as an operator's shell would.
fn juju(env: &Env, store: &Path, args: &[&str]) -> Run {
    let out = env
        .cmd()
        .env("CHARM_HARNESS_CHARMHUB", store)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What `readelf` says of a binary's dynamic needs: the interpreter and each NEEDED library.
fn dynamic_needs(bin: &Path) -> Vec<String> {
    let mut needs = Vec::new();
    for flag in ["-lW", "-dW"] {
        let out = Command::new("readelf").arg(flag).arg(bin).output().unwrap();
        assert!(out.status.success(), "readelf {flag} {}", bin.display());
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.contains("program interpreter") || l.contains("(NEEDED)") {
                needs.push(l.trim().to_string());
            }
        }
    }
    needs
}

/// The bases of a charmcraft.yaml's platforms (`ubuntu@<channel>:amd64`), in order.
fn run_on(charmcraft: &Path) -> Vec<String> {
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(charmcraft).unwrap()).unwrap();
    v["platforms"]
        .as_object()
        .expect("charmcraft.yaml has platforms")
        .keys()
        .map(|k| {
            k.strip_suffix(":amd64")
                .expect("an amd64 platform")
                .to_string()
        })
        .collect()
}

/// The bases a manifest.yaml lists, as `ubuntu@<channel>`, each for amd64.
fn manifest_bases(manifest: &str) -> Vec<String> {
    let m: Value = serde_yaml::from_str(manifest).unwrap();
    m["bases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["architectures"], serde_json::json!(["amd64"]), "{b}");
            format!(
                "{}@{}",
                b["name"].as_str().unwrap(),
                b["channel"].as_str().unwrap()
            )
        })
        .collect()
}

/// The manifest.yaml inside a .charm archive.
fn archive_manifest(charm: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read('manifest.yaml').decode())",
        ])
        .arg(charm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// charmcraft itself (the PyPI package, tests/setup.sh) reads both charms' project files:
/// `expand-extensions` validates charmcraft.yaml with metadata, config and actions merged
/// in, as `charmcraft pack` would before it builds (packing needs LXD, which cannot run
/// here).
#[test]
fn charmcraft_accepts_both_projects_and_lints_their_archives() {
    let charmcraft = fixtures().join("charmcraft/bin/charmcraft");
    assert!(
        charmcraft.exists(),
        "{} (tests/setup.sh installs it)",
        charmcraft.display()
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (dir, files) in [
        (
            repo.to_path_buf(),
            &[
                "charmcraft.yaml",
                "metadata.yaml",
                "config.yaml",
                "actions.yaml",
            ][..],
        ),
        (
            repo.join("easyrsa"),
            &["charmcraft.yaml", "metadata.yaml"][..],
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::copy(dir.join(f), work.path().join(f)).unwrap();
        }
        let out = Command::new(&charmcraft)
            .arg("expand-extensions")
            .current_dir(work.path())
            .env("XDG_RUNTIME_DIR", work.path())
            .env("HOME", work.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "charmcraft refuses {}: {}{}",
            dir.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            v["platforms"].as_object().map(|p| p.len()),
            Some(3),
            "{text}"
        );
    }
}

/// A zip of `dir` with `edit` applied to a copy first, as a broken package would be.
fn repack(dir: &Path, out: &Path, edit: impl Fn(&Path)) {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("charm");
    let st = Command::new("cp")
        .arg("-a")
        .arg(dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    edit(&copy);
    let st = Command::new("python3")
        .args([
            "-c",
            "import os, sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[2], 'w') as z:\n\
             \x20   for root, _, files in os.walk(sys.argv[1]):\n\
             \x20       for f in files:\n\
             \x20           p = os.path.join(root, f)\n\
             \x20           z.write(p, os.path.relpath(p, sys.argv[1]))\n",
        ])
        .arg(&copy)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn packed_charms_carry_their_bases_run_statically_linked_and_bad_archives_are_refused() {
    let build = tempfile::tempdir().unwrap();
    let store = build.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = Command::new("bash")
        .arg(repo.join("pack.sh"))
        .arg(store)
        .status()
        .unwrap();
    assert!(st.success(), "pack.sh");

    // manifest.yaml: the bases of charmcraft.yaml's run-on, for amd64.
    for (charm, charmcraft) in [
        ("etcd", repo.join("charmcraft.yaml")),
        ("easyrsa", repo.join("easyrsa/charmcraft.yaml")),
    ] {
        let bases = manifest_bases(
            &std::fs::read_to_string(store.join(charm).join("manifest.yaml")).unwrap(),
        );
        assert_eq!(bases, run_on(&charmcraft), "{charm}");
        // As charmcraft packs them: one archive per platform, with that one base.
        for base in &bases {
            let one = store.join(format!("{charm}_{base}-amd64.charm"));
            assert_eq!(
                manifest_bases(&archive_manifest(&one)),
                vec![base.clone()],
                "{}",
                one.display()
            );
        }
        assert!(
            bases.contains(&"ubuntu@20.04".to_string()),
            "{charm}: focal"
        );
        // No interpreter and no shared library: runs whatever the base's glibc.
        let bin = store.join(charm).join("bin").join(format!("{charm}-charm"));
        assert_eq!(
            dynamic_needs(&bin),
            Vec::<String>::new(),
            "{}",
            bin.display()
        );
        assert!(store.join(format!("{charm}.charm")).is_file());
    }

    // The archive, found by name, deploys on focal and its static binary runs the unit.
    let work = tempfile::tempdir().unwrap();
    let tarball = etcd_tarball(work.path(), &etcd35(), "3.5.1");
    let env = Env::new("packing", &["update-status-hook-interval=1h"]);
    let r = juju(
        &env,
        store,
        &[
            "deploy",
            "etcd",
            "--series=focal",
            "--resource",
            &format!("etcd={}", tarball.display()),
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    env.wait_units(
        "etcd",
        1,
        "active",
        "Healthy with 1 known peers",
        2 * support::etcd::MIN,
    );
    let s = env.status();
    assert_eq!(
        s["applications"]["etcd"]["base"],
        serde_json::json!({"name": "ubuntu", "channel": "20.04"})
    );
    // The unit runs the packed binary (dispatch prefers bin/), not a checkout's build.
    let bin = env.exec_ok(
        "etcd/0",
        "sha256sum /var/lib/juju/agents/unit-etcd-0/charm/bin/etcd-charm",
    );
    let packed = Command::new("sha256sum")
        .arg(store.join("etcd/bin/etcd-charm"))
        .output()
        .unwrap();
    assert_eq!(
        bin.split_whitespace().next(),
        String::from_utf8_lossy(&packed.stdout)
            .split_whitespace()
            .next()
    );
    // `refresh` without --path asks the store again for the name it came from.
    let r = juju(&env, store, &["refresh", "etcd"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    env.wait("charm revision 2 settled", 2 * support::etcd::MIN, |s| {
        s["applications"]["etcd"]["charm-rev"] == 2
            && s["applications"]["etcd"]["units"]["etcd/0"]["workload-status"]["message"]
                == "Healthy with 1 known peers"
            && s["applications"]["etcd"]["units"]["etcd/0"]["juju-status"]["current"] == "idle"
    });

    // Refused as Juju 3.6 refuses them, naming the reason; nothing is deployed.
    let broken = tempfile::tempdir().unwrap();
    repack(
        &store.join("etcd"),
        &broken.path().join("nomanifest.charm"),
        |d| std::fs::remove_file(d.join("manifest.yaml")).unwrap(),
    );
    repack(
        &store.join("etcd"),
        &broken.path().join("bionic.charm"),
        |d| {
            std::fs::write(
                d.join("manifest.yaml"),
                "bases:\n- name: ubuntu\n  channel: '18.04'\n  architectures: [amd64]\n",
            )
            .unwrap()
        },
    );
    std::fs::write(broken.path().join("junk.charm"), "not a zip").unwrap();
    let nomanifest = broken.path().join("nomanifest.charm");
    let bionic = broken.path().join("bionic.charm");
    let junk = broken.path().join("junk.charm");
    for (args, says) in [
        (
            vec!["deploy", nomanifest.to_str().unwrap(), "a1"],
            "no manifest.yaml",
        ),
        (
            vec!["deploy", bionic.to_str().unwrap(), "a2"],
            "supports no base Juju 3.6 deploys",
        ),
        (
            vec!["deploy", junk.to_str().unwrap(), "a3"],
            "is not a charm archive",
        ),
        (
            vec!["deploy", "easyrsa", "a4", "--base", "ubuntu@18.04"],
            "not one Juju 3.6 deploys",
        ),
        (
            vec!["deploy", "easyrsa", "a5", "--series", "sid"],
            "series \"sid\" not valid",
        ),
        (
            vec!["deploy", "no-such-charm"],
            "not found in CHARM_HARNESS_CHARMHUB",
        ),
    ] {
        let r = juju(&env, store, &args);
        assert_ne!(r.code, 0, "{args:?} was accepted");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    let apps = env.status()["applications"].as_object().unwrap().len();
    assert_eq!(apps, 1, "only etcd is deployed");
}
