//! Bases as Juju 3.6 reads them. A packed charm (`.charm`) names the bases it runs on in
//! `manifest.yaml` (charmcraft writes it; metadata.yaml's `series` is deprecated and Juju 3
//! ignores it there), and Juju refuses an archive without them. A charm directory may still
//! carry `series` in metadata.yaml. `deploy` then picks one base the charm supports: the one
//! asked for (`--base ubuntu@22.04` or `--series jammy`), else Juju 3.6's default, else the
//! charm's first.
//!
//! What this controller's machines really run is the host's Debian: the chosen base is
//! recorded for the application (and shown by `status`) and checked the way Juju checks it,
//! so that a charm a real deploy would refuse is refused here too.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// Series names and the Ubuntu releases Juju 3.6 deploys machine charms on.
pub const DEPLOYABLE: &[(&str, &str)] =
    &[("focal", "20.04"), ("jammy", "22.04"), ("noble", "24.04")];
/// Juju 3.6's default base, used when the charm supports it and none is asked for.
const DEFAULT: &str = "ubuntu@24.04";
/// Releases Juju knows but 3.6 no longer deploys on (named in refusals).
const RETIRED: &[(&str, &str)] = &[
    ("trusty", "14.04"),
    ("xenial", "16.04"),
    ("bionic", "18.04"),
];

/// The bases a charm declares, as `ubuntu@22.04` strings, in its order. `None`: a charm
/// directory that declares none (no manifest.yaml and no `series`). An archive (`packed`)
/// must have a manifest.yaml with bases.
pub fn declared(dir: &Path, packed: bool) -> Result<Option<Vec<String>>> {
    let manifest = dir.join("manifest.yaml");
    match std::fs::read_to_string(&manifest) {
        Ok(text) => return from_manifest(&text).map(Some),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("reading the charm's {}", manifest.display()))
        }
        Err(_) if packed => bail!(
            "the charm archive has no manifest.yaml, so it names no bases: Juju 3 refuses it. \
             Pack it with charmcraft (or this repository's pack.sh), which writes the bases \
             of charmcraft.yaml there"
        ),
        Err(_) => {}
    }
    let meta_path = dir.join("metadata.yaml");
    let meta: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&meta_path)
            .with_context(|| format!("reading {}", meta_path.display()))?,
    )
    .with_context(|| format!("parsing {}", meta_path.display()))?;
    let Some(series) = meta.get("series") else {
        return Ok(None);
    };
    let names = series
        .as_array()
        .ok_or_else(|| anyhow!("metadata.yaml: series must be a list of names (e.g. [jammy])"))?;
    names
        .iter()
        .map(|s| {
            let s = s
                .as_str()
                .ok_or_else(|| anyhow!("metadata.yaml: series {s} is not a name"))?;
            from_series(s)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `bases` of a manifest.yaml: each `{name, channel, architectures}`.
fn from_manifest(text: &str) -> Result<Vec<String>> {
    let v: Value = serde_yaml::from_str(text).context("parsing the charm's manifest.yaml")?;
    let bases = v
        .get("bases")
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "the charm's manifest.yaml lists no bases: Juju 3 refuses it. Pack it with \
                 charmcraft (or pack.sh) from a charmcraft.yaml with run-on bases"
            )
        })?;
    let mut out = Vec::new();
    for b in bases {
        let (Some(name), Some(channel)) = (
            b.get("name").and_then(Value::as_str),
            b.get("channel").and_then(|c| match c {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        ) else {
            bail!("manifest.yaml: base {b} needs a name and a channel (e.g. ubuntu, \"22.04\")");
        };
        let archs: Vec<&str> = b
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // A base for other architectures cannot run on this amd64 host.
        if archs.is_empty() || archs.contains(&"amd64") {
            out.push(format!("{name}@{channel}"));
        }
    }
    Ok(out)
}

fn from_series(s: &str) -> Result<String> {
    DEPLOYABLE
        .iter()
        .chain(RETIRED)
        .find(|(n, _)| *n == s)
        .map(|(_, c)| format!("ubuntu@{c}"))
        .ok_or_else(|| anyhow!("series {s:?} not valid (known: focal, jammy, noble)"))
}

fn deployable(base: &str) -> bool {
    DEPLOYABLE
        .iter()
        .any(|(_, c)| base == format!("ubuntu@{c}"))
}

/// The base asked for on the command line, from `--base` or `--series` (not both).
pub fn requested(base: Option<&str>, series: Option<&str>) -> Result<Option<String>> {
    match (base, series) {
        (Some(_), Some(_)) => bail!("--base and --series cannot both be given: use --base"),
        (Some(b), None) => {
            let (name, channel) = b
                .split_once('@')
                .filter(|(n, c)| !n.is_empty() && !c.is_empty())
                .ok_or_else(|| {
                    anyhow!("--base {b:?}: expected <os>@<channel>, e.g. ubuntu@22.04")
                })?;
            Ok(Some(format!("{name}@{channel}")))
        }
        (None, Some(s)) => from_series(s).map(Some),
        (None, None) => Ok(None),
    }
}

/// The base `deploy` uses for charm `name` declaring `charm` bases, as Juju 3.6 decides:
/// the one asked for if the charm supports it (or `force`), else the default or the charm's
/// first. Refuses a charm none of whose bases Juju 3.6 deploys.
pub fn choose(
    name: &str,
    charm: Option<&[String]>,
    asked: Option<String>,
    force: bool,
) -> Result<String> {
    let usable: Vec<&String> = charm
        .unwrap_or(&[])
        .iter()
        .filter(|b| deployable(b))
        .collect();
    if charm.is_some() && usable.is_empty() {
        bail!(
            "charm {name:?} supports no base Juju 3.6 deploys (it lists: {}; deployable: {})",
            list(charm.unwrap_or(&[]).iter()),
            deployable_list()
        );
    }
    if let Some(b) = asked {
        if !deployable(&b) {
            bail!(
                "base {b:?} is not one Juju 3.6 deploys on: use one of {}",
                deployable_list()
            );
        }
        if charm.is_some() && !usable.contains(&&b) && !force {
            bail!(
                "charm {name:?} does not support {b}, force not used: base {b:?} not supported \
                 by charm, the charm supported bases are: {}",
                list(usable.into_iter())
            );
        }
        return Ok(b);
    }
    match charm {
        None => Ok(DEFAULT.to_string()),
        Some(_) => Ok(usable
            .iter()
            .find(|b| b.as_str() == DEFAULT)
            .unwrap_or(&usable[0])
            .to_string()),
    }
}

/// The bases Juju 3.6 deploys, for messages.
fn deployable_list() -> String {
    let all: Vec<String> = DEPLOYABLE
        .iter()
        .map(|(_, c)| format!("ubuntu@{c}"))
        .collect();
    list(all.iter())
}

fn list<'a>(bases: impl Iterator<Item = &'a String>) -> String {
    bases.map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// `ubuntu@22.04` as status prints a base: `{"name": "ubuntu", "channel": "22.04"}`.
pub fn to_json(base: &str) -> Value {
    let (name, channel) = base.split_once('@').unwrap_or((base, ""));
    serde_json::json!({"name": name, "channel": channel})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: &[&str]) -> Vec<String> {
        b.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn manifest_bases_are_read_and_other_architectures_left_out() {
        let m = "bases:\n- name: ubuntu\n  channel: '20.04'\n  architectures: [amd64]\n\
                 - name: ubuntu\n  channel: '22.04'\n  architectures: [arm64]\n";
        assert_eq!(from_manifest(m).unwrap(), v(&["ubuntu@20.04"]));
        assert!(from_manifest("bases: []\n").is_err());
        assert!(from_manifest("analysis: {}\n").is_err());
        assert!(from_manifest("bases:\n- name: ubuntu\n").is_err());
    }

    #[test]
    fn deploy_picks_the_asked_base_only_when_the_charm_has_it() {
        let etcd = v(&["ubuntu@20.04", "ubuntu@22.04", "ubuntu@24.04"]);
        let asked = requested(None, Some("focal")).unwrap();
        assert_eq!(
            choose("etcd", Some(&etcd), asked, false).unwrap(),
            "ubuntu@20.04"
        );
        assert_eq!(
            choose("etcd", Some(&etcd), None, false).unwrap(),
            "ubuntu@24.04"
        );
        let jammy = v(&["ubuntu@22.04"]);
        assert_eq!(
            choose("x", Some(&jammy), None, false).unwrap(),
            "ubuntu@22.04"
        );
        let e = choose("x", Some(&jammy), Some("ubuntu@20.04".into()), false).unwrap_err();
        assert!(
            e.to_string().contains("supported bases are: ubuntu@22.04"),
            "{e}"
        );
        assert!(choose("x", Some(&jammy), Some("ubuntu@20.04".into()), true).is_ok());
        let old = v(&["ubuntu@18.04"]);
        assert!(choose("x", Some(&old), None, false).is_err());
        assert!(choose("x", None, Some("ubuntu@16.04".into()), true).is_err());
        assert!(requested(None, Some("sid")).is_err());
        assert!(requested(Some("ubuntu"), None).is_err());
        assert!(requested(Some("ubuntu@22.04"), Some("jammy")).is_err());
    }
}
