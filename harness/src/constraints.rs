//! Constraints as Juju reads them (`--constraints` of deploy and add-machine,
//! `set-constraints`): space-separated `name=value` pairs, each name once, values checked by
//! kind, written back in Juju's canonical order and units (juju/juju
//! `core/constraints/constraints.go`: Parse, setRaw, parseSize, parseUint64, String; its
//! tests `constraints_test.go`). Spaces inside a value are escaped `\ `.
//!
//! The machines here are namespaces on one host: a constraint about hardware (`mem`,
//! `cores`, `root-disk`) is recorded and shown, not enforced, as a cloud whose smallest
//! instance already meets it would do. One that names what this controller has not (another
//! architecture, a container, a zone or space other than `alpha`) is refused at once, where
//! Juju would leave the machine in error: never silently ignored.

use anyhow::{bail, Result};

/// Juju's constraint names in the order `String()` writes them; `cpu-cores` is an alias of
/// `cores`.
const NAMES: &[&str] = &[
    "arch",
    "container",
    "cores",
    "cpu-power",
    "nested-virtualization",
    "instance-role",
    "instance-type",
    "mem",
    "root-disk",
    "root-disk-source",
    "tags",
    "spaces",
    "virt-type",
    "zones",
    "allocate-public-ip",
    "image-id",
];

/// Juju's supported architectures (`core/arch`).
const ARCHES: &[&str] = &["amd64", "arm64", "ppc64el", "s390x", "riscv64"];

/// The one space of every model here (Juju's default space).
pub const SPACE: &str = "alpha";

/// Parses `text` (one or more `--constraints` arguments joined by spaces) into Juju's
/// canonical form: `mem=4096M cores=2` → `cores=2 mem=4096M`.
pub fn parse(args: &[impl AsRef<str>]) -> Result<String> {
    let mut set: Vec<(usize, String)> = vec![];
    for arg in args {
        let arg = arg.as_ref().replace("\\ ", "\0");
        for raw in arg.split(' ') {
            let raw = raw.replace('\0', " ");
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let Some((name, value)) = raw.split_once('=').filter(|(n, _)| !n.is_empty()) else {
                bail!("malformed constraint {raw:?}");
            };
            let canonical = if name == "cpu-cores" { "cores" } else { name };
            let Some(index) = NAMES.iter().position(|n| *n == canonical) else {
                bail!("unknown constraint {name:?}");
            };
            if set.iter().any(|(i, _)| *i == index) {
                bail!("bad {canonical:?} constraint: already set");
            }
            let value = check(canonical, value)
                .map_err(|e| anyhow::anyhow!("bad {canonical:?} constraint: {e}"))?;
            set.push((index, format!("{canonical}={}", value.replace(' ', "\\ "))));
        }
    }
    set.sort_by_key(|(i, _)| *i);
    Ok(set
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(" "))
}

/// `--bind` as Juju reads it (juju/juju `cmd/juju/application/binding.go`, parseBindExpr and its
/// tests): a bare space name binds every endpoint by default, `endpoint=space` one endpoint.
/// Returns endpoint → space, the default under "". Every space must exist (here: only
/// `alpha`) and every endpoint be one of the charm's.
pub fn bindings(
    expr: &str,
    endpoints: &[String],
) -> Result<std::collections::BTreeMap<String, String>> {
    const FORM: &str =
        "--bind must be in the form '[<default-space>] [<endpoint-name>=<space> ...]'";
    let mut out = std::collections::BTreeMap::new();
    for token in expr.split_whitespace() {
        let parts: Vec<&str> = token.split('=').collect();
        let (endpoint, space) = match parts[..] {
            [space] => ("", space),
            ["", _] => bail!("{FORM}; found \"=\" without endpoint name. Use a lone space name to set the default."),
            [endpoint, space] => (endpoint, space),
            _ => bail!("{FORM}; found multiple \"=\" in binding. Did you forget to space-separate the binding list?"),
        };
        let space = space.trim_matches('"');
        if space != SPACE {
            bail!("space {space:?} not found (this controller's models have one space, {SPACE:?})");
        }
        if !endpoint.is_empty() && !endpoints.iter().any(|e| e == endpoint) {
            bail!(
                "endpoint {endpoint:?} not found (the charm's endpoints: {})",
                endpoints.join(", ")
            );
        }
        out.insert(endpoint.to_string(), space.to_string());
    }
    Ok(out)
}

/// One value, checked as Juju checks it; the canonical value back.
fn check(name: &str, value: &str) -> Result<String, String> {
    match name {
        "arch" => {
            if !value.is_empty() && !ARCHES.contains(&value) {
                return Err(format!("{value:?} not recognized"));
            }
            // Juju's name for the host's architecture.
            let host = std::env::consts::ARCH.replace("x86_64", "amd64");
            if !value.is_empty() && value != host {
                return Err(format!(
                    "this controller's machines are {host}: no {value} machine can be made"
                ));
            }
            Ok(value.into())
        }
        "container" => match value {
            "" | "none" => Ok(value.into()),
            "lxd" | "kvm" => Err(format!(
                "containers ({value}) are not supported by this controller: its machines are namespaces on one host"
            )),
            _ => Err(format!("invalid container type {value:?}")),
        },
        "cores" | "cpu-power" => {
            if value.is_empty() {
                return Ok(String::new());
            }
            value
                .parse::<u64>()
                .map(|n| if n == 0 { String::new() } else { n.to_string() })
                .map_err(|_| "must be a non-negative integer".into())
        }
        "mem" | "root-disk" => size(value).map(|mb| {
            if mb == 0 {
                String::new()
            } else {
                format!("{mb}M")
            }
        }),
        "nested-virtualization" | "allocate-public-ip" => match value {
            "" => Ok("false".into()),
            "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok("true".into()),
            "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok("false".into()),
            _ => Err("must be 'true' or 'false'".into()),
        },
        "spaces" => {
            for s in value.split(',').filter(|s| !s.is_empty()) {
                let bare = s.trim_start_matches('^');
                if bare.is_empty()
                    || !bare
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    || bare.starts_with('-')
                    || bare.ends_with('-')
                {
                    return Err(format!("{bare:?} is not a valid space name"));
                }
                if !s.starts_with('^') && bare != SPACE {
                    return Err(format!(
                        "space {bare:?} not found (this controller's models have one space, {SPACE:?})"
                    ));
                }
            }
            Ok(value.into())
        }
        "zones" => {
            if value.is_empty() {
                Ok(String::new())
            } else {
                Err(format!(
                    "this controller has no availability zones ({value:?} cannot be met)"
                ))
            }
        }
        _ => Ok(value.into()),
    }
}

/// Megabytes, as Juju's parseSize: a non-negative float with an optional M/G/T/P suffix,
/// rounded up.
fn size(value: &str) -> Result<u64, String> {
    if value.is_empty() {
        return Ok(0);
    }
    let (num, mult) = match value.as_bytes()[value.len() - 1] {
        b'M' => (&value[..value.len() - 1], 1.0),
        b'G' => (&value[..value.len() - 1], 1024.0),
        b'T' => (&value[..value.len() - 1], 1024.0 * 1024.0),
        b'P' => (&value[..value.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (value, 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * mult).ceil() as u64),
        _ => Err("must be a non-negative float with optional M/G/T/P suffix".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The cases of juju/juju core/constraints/constraints_test.go this reproduces.
    #[test]
    fn parses_as_juju_does() {
        assert_eq!(parse(&["mem=4G cores=2"]).unwrap(), "cores=2 mem=4096M");
        assert_eq!(parse(&["mem=1.5G"]).unwrap(), "mem=1536M");
        assert_eq!(parse(&["mem=512"]).unwrap(), "mem=512M");
        assert_eq!(
            parse(&["cpu-cores=4", "root-disk=20G"]).unwrap(),
            "cores=4 root-disk=20480M"
        );
        assert_eq!(
            parse(&["tags=a,b instance-type=x\\ y"]).unwrap(),
            "instance-type=x\\ y tags=a,b"
        );
        assert_eq!(parse(&["spaces=alpha,^db"]).unwrap(), "spaces=alpha,^db");
        assert_eq!(parse(&[""]).unwrap(), "");
        let err = |a: &str| parse(&[a]).unwrap_err().to_string();
        assert_eq!(
            err("mem=cheese"),
            "bad \"mem\" constraint: must be a non-negative float with optional M/G/T/P suffix"
        );
        assert_eq!(
            err("mem=-1"),
            "bad \"mem\" constraint: must be a non-negative float with optional M/G/T/P suffix"
        );
        assert_eq!(
            err("mem=32Y"),
            "bad \"mem\" constraint: must be a non-negative float with optional M/G/T/P suffix"
        );
        assert_eq!(err("mem=1G mem=2G"), "bad \"mem\" constraint: already set");
        assert_eq!(
            err("cores=-1"),
            "bad \"cores\" constraint: must be a non-negative integer"
        );
        assert_eq!(err("cheese=edam"), "unknown constraint \"cheese\"");
        assert_eq!(err("mem"), "malformed constraint \"mem\"");
        assert_eq!(err("=4G"), "malformed constraint \"=4G\"");
        assert_eq!(
            err("arch=sparc"),
            "bad \"arch\" constraint: \"sparc\" not recognized"
        );
        assert_eq!(
            err("allocate-public-ip=maybe"),
            "bad \"allocate-public-ip\" constraint: must be 'true' or 'false'"
        );
        // What this controller cannot make is refused, never ignored.
        assert!(
            err("spaces=db").contains("space \"db\" not found"),
            "{}",
            err("spaces=db")
        );
        assert!(err("zones=us-east-1a").contains("no availability zones"));
        assert!(err("container=lxd").contains("not supported"));
        assert!(err("arch=s390x").contains("no s390x machine"));
        assert_eq!(
            err("cpu-cores=1 cores=2"),
            "bad \"cores\" constraint: already set"
        );
    }

    #[test]
    fn binds_as_juju_does() {
        let eps = vec!["db".to_string(), "cluster".to_string()];
        let b = bindings("alpha db=alpha", &eps).unwrap();
        assert_eq!(b.get(""), Some(&"alpha".to_string()));
        assert_eq!(b.get("db"), Some(&"alpha".to_string()));
        assert!(bindings("db=public", &eps)
            .unwrap_err()
            .to_string()
            .contains("space \"public\" not found"));
        assert!(bindings("nope=alpha", &eps)
            .unwrap_err()
            .to_string()
            .contains("endpoint \"nope\" not found"));
        assert!(bindings("db=", &eps)
            .unwrap_err()
            .to_string()
            .contains("space \"\" not found"));
        assert!(bindings("=alpha", &eps)
            .unwrap_err()
            .to_string()
            .contains("without endpoint name"));
        assert!(bindings("db=alpha=x", &eps)
            .unwrap_err()
            .to_string()
            .contains("multiple"));
    }
}
