//! The secret-* hook tools. Changes are buffered in the hook context (`SecretOp`) and
//! applied when the hook exits 0; reads see committed secrets.

use crate::controller::{HookCtx, SecretOp};
use crate::flags::{self, boolean, value};
use crate::format::{render, Format};
use crate::proto::Reply;
use crate::state::*;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub enum SErr {
    Usage(String),
    Run(String),
}

fn usage<T>(m: impl Into<String>) -> Result<T, SErr> {
    Err(SErr::Usage(m.into()))
}
fn refuse<T>(m: impl Into<String>) -> Result<T, SErr> {
    Err(SErr::Run(m.into()))
}

pub(crate) fn new_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let mut rng = rand::thread_rng();
    let s: String = (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    format!("secret:{s}")
}

/// `secret:xyz`, `secret://uuid/xyz` and bare `xyz` all name the same secret.
pub(crate) fn normalize(id: &str) -> String {
    let tail = id.rsplit('/').next().unwrap_or(id);
    let tail = tail.strip_prefix("secret:").unwrap_or(tail);
    format!("secret:{tail}")
}

fn owner_of(ctx: &HookCtx, owner_flag: Option<&str>) -> Result<String, SErr> {
    match owner_flag.unwrap_or("application") {
        "application" => Ok(ctx.app.clone()),
        "unit" => Ok(ctx.unit.clone()),
        other => usage(format!("secret owner {other:?} not valid")),
    }
}

fn is_leader(m: &Model, ctx: &HookCtx) -> bool {
    m.apps.get(&ctx.app).and_then(|a| a.leader.as_deref()) == Some(ctx.unit.as_str())
}

/// Can this unit manage (update, remove, grant) the secret?
fn can_manage(m: &Model, ctx: &HookCtx, s: &Secret) -> bool {
    s.owner == ctx.unit || (s.owner == ctx.app && is_leader(m, ctx))
}

fn is_owner_side(ctx: &HookCtx, s: &Secret) -> bool {
    s.owner == ctx.unit || s.owner == ctx.app
}

fn granted(m: &Model, ctx: &HookCtx, s: &Secret) -> bool {
    s.app_grants.contains(&ctx.app)
        || s.grants.iter().any(|(rel, who)| {
            m.relations.contains_key(rel) && (who.contains(&ctx.unit) || who.contains(&ctx.app))
        })
}

fn content_args(
    ctx: &HookCtx,
    args: &[String],
    file: Option<&str>,
    stdin: Option<&str>,
) -> Result<Bag, SErr> {
    let mut bag = Bag::new();
    if let Some(f) = file {
        let text = if f == "-" {
            stdin.unwrap_or("").to_string()
        } else {
            super::machine_fs::read_in_machine(ctx, f).map_err(SErr::Run)?
        };
        let v: BTreeMap<String, String> = serde_yaml::from_str(&text)
            .map_err(|e| SErr::Usage(format!("invalid secret file: {e}")))?;
        bag.extend(v);
    }
    for (k, v) in flags::key_values(args).map_err(SErr::Usage)? {
        let (key, enc) = match k.split_once('#') {
            Some((key, enc)) => (key.to_string(), Some(enc.to_string())),
            None => (k.clone(), None),
        };
        let val = match enc.as_deref() {
            None => v,
            Some("base64") => {
                let b = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map_err(|e| SErr::Usage(format!("invalid base64 for {key}: {e}")))?;
                String::from_utf8(b).map_err(|_| {
                    SErr::Usage(format!(
                        "{key}: binary secret values are not supported here"
                    ))
                })?
            }
            Some("file") => super::machine_fs::read_in_machine(ctx, &v).map_err(SErr::Run)?,
            Some(other) => return usage(format!("invalid encoding {other:?} for {key}")),
        };
        if !valid_key(&key) {
            return usage(format!("invalid secret key {key:?}"));
        }
        if val.is_empty() {
            return usage(format!("empty secret value for {key:?}"));
        }
        bag.insert(key, val);
    }
    check_size(&bag)?;
    Ok(bag)
}

/// Juju's bounds on a secret's content, counted base64-encoded as Juju stores it: 1,000,000
/// bytes per value and in all (juju/juju `core/secrets/secret.go`, `encodeBase64`:
/// maxValueSizeBytes, maxContentSizeBytes), with Juju's messages.
pub(crate) fn check_size(bag: &Bag) -> Result<(), SErr> {
    const MAX: usize = 1000 * 1000;
    let mut total = 0;
    for (key, value) in bag {
        let size = value.len().div_ceil(3) * 4;
        if size > MAX {
            return refuse(format!(
                "base64 encoded secret content for key {key:?} too large: {size} bytes"
            ));
        }
        total += size;
    }
    if total > MAX {
        return refuse(format!(
            "base64 encoded secret content too large: {total} bytes"
        ));
    }
    Ok(())
}

pub(crate) fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_lowercase() || b[b.len() - 1] == b'-' {
        return false;
    }
    let mut prev_dash = false;
    for c in b {
        let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
        if !ok || (prev_dash && *c == b'-') {
            return false;
        }
        prev_dash = *c == b'-';
    }
    true
}

const META_FLAGS: [flags::Flag; 6] = [
    value(&["label"]),
    value(&["description"]),
    value(&["expire"]),
    value(&["rotate"]),
    value(&["owner"]),
    value(&["file"]),
];

fn find<'a>(
    m: &'a Model,
    ctx: &HookCtx,
    id: Option<&str>,
    label: Option<&str>,
) -> Result<&'a Secret, SErr> {
    if let Some(id) = id {
        return m
            .secrets
            .get(&normalize(id))
            .ok_or_else(|| SErr::Run(format!("secret {id:?} not found")));
    }
    let label = label.unwrap_or("");
    m.secrets
        .values()
        .find(|s| {
            (is_owner_side(ctx, s) && s.label.as_deref() == Some(label))
                || s.consumer_labels
                    .get(&ctx.unit)
                    .map(|l| l == label)
                    .unwrap_or(false)
        })
        .ok_or_else(|| SErr::Run(format!("secret with label {label:?} not found")))
}

pub fn dispatch(
    m: &mut Model,
    ctx: &mut HookCtx,
    tool: &str,
    args: &[String],
    stdin: Option<&str>,
) -> Result<Reply, SErr> {
    let mut defs: Vec<flags::Flag> = META_FLAGS.to_vec();
    defs.extend([
        value(&["format"]),
        value(&["o", "output"]),
        boolean(&["peek"]),
        boolean(&["refresh"]),
        value(&["revision"]),
        value(&["r", "relation"]),
        value(&["unit"]),
        value(&["app"]),
    ]);
    let p = flags::parse(&defs, args).map_err(SErr::Usage)?;
    match tool {
        "secret-add" => secret_add(Call {
            m,
            ctx,
            tool,
            p: &p,
            stdin,
        }),
        "secret-get" => secret_get(Call {
            m,
            ctx,
            tool,
            p: &p,
            stdin,
        }),
        "secret-set" => secret_set(Call {
            m,
            ctx,
            tool,
            p: &p,
            stdin,
        }),
        "secret-remove" => secret_remove(Call {
            m,
            ctx,
            tool,
            p: &p,
            stdin,
        }),
        "secret-grant" | "secret-revoke" => secret_grant(Call {
            m,
            ctx,
            tool,
            p: &p,
            stdin,
        }),
        "secret-ids" => secret_ids(Call {
            m,
            ctx,
            tool,
            p: &p,
            stdin,
        }),
        "secret-info-get" => secret_info_get(Call {
            m,
            ctx,
            tool,
            p: &p,
            stdin,
        }),
        other => refuse(format!("unknown hook tool {other:?}")),
    }
}

/// One secret tool call.
struct Call<'a> {
    m: &'a mut Model,
    ctx: &'a mut HookCtx,
    tool: &'a str,
    p: &'a flags::Parsed,
    stdin: Option<&'a str>,
}

/// The secret the first argument names, which this unit may manage (`verb` says what for,
/// in the refusal).
fn managed(m: &Model, ctx: &HookCtx, p: &flags::Parsed, verb: &str) -> Result<Secret, SErr> {
    let Some(id) = p.positional.first() else {
        return usage("missing secret URI");
    };
    let s = find(m, ctx, Some(id), None)?.clone();
    if !can_manage(m, ctx, &s) {
        return refuse(format!(
            "permission denied: cannot {verb} secret {:?}",
            s.id
        ));
    }
    Ok(s)
}

/// `v` in the format the call asked for (`--format`), else `default`.
fn fmt(p: &flags::Parsed, v: &Value, default: Format) -> Result<Reply, SErr> {
    let f = Format::parse(p.value("format"), default).map_err(SErr::Usage)?;
    Ok(Reply::ok(render(v, f)))
}

/// `secret-add`.
fn secret_add(c: Call) -> Result<Reply, SErr> {
    let Call {
        m, ctx, p, stdin, ..
    } = c;
    let owner = owner_of(ctx, p.value("owner"))?;
    if owner == ctx.app && !is_leader(m, ctx) {
        return refuse("permission denied: only the leader can add application-owned secrets");
    }
    let content = content_args(ctx, &p.positional, p.value("file"), stdin)?;
    if content.is_empty() {
        return usage("missing secret value or filename");
    }
    if let Some(l) = p.value("label") {
        if m.secrets
            .values()
            .any(|s| s.owner == owner && s.label.as_deref() == Some(l))
        {
            return refuse(format!("secret with label {l:?} already exists"));
        }
    }
    let id = new_id();
    let secret = Secret {
        id: id.clone(),
        owner,
        label: p.value("label").map(String::from),
        description: p.value("description").map(String::from),
        expire: p.value("expire").map(String::from),
        rotate: p.value("rotate").map(String::from),
        revisions: BTreeMap::from([(1, content)]),
        grants: Default::default(),
        consumer_labels: Default::default(),
        app_grants: Default::default(),
    };
    ctx.secrets.push(SecretOp::Add(secret));
    Ok(Reply::ok(format!("{id}\n")))
}

/// `secret-get`.
fn secret_get(c: Call) -> Result<Reply, SErr> {
    let Call { m, ctx, p, .. } = c;
    if p.flag("peek") && p.flag("refresh") {
        return usage("specify one of --peek or --refresh but not both");
    }
    let id = p.positional.first().map(String::as_str);
    if id.is_none() && p.value("label").is_none() {
        return usage("require either a secret URI or label");
    }
    let s = find(
        m,
        ctx,
        id,
        if id.is_some() { None } else { p.value("label") },
    )?
    .clone();
    let owner_side = is_owner_side(ctx, &s);
    if !owner_side && !granted(m, ctx, &s) {
        return refuse(format!("secret {:?} not found", s.id));
    }
    let rev = if owner_side || p.flag("peek") {
        s.latest()
    } else {
        let u = m.units.get_mut(&ctx.unit).unwrap();
        let tracked = u.tracked.entry(s.id.clone()).or_insert(s.latest());
        if p.flag("refresh") {
            *tracked = s.latest();
        }
        *tracked
    };
    if let (Some(_), Some(l), false) = (id, p.value("label"), owner_side) {
        m.secrets
            .get_mut(&s.id)
            .unwrap()
            .consumer_labels
            .insert(ctx.unit.clone(), l.to_string());
    }
    let content = s.revisions.get(&rev).cloned().unwrap_or_default();
    match p.positional.get(1) {
        Some(k) => {
            let (key, b64) = match k.strip_suffix("#base64") {
                Some(x) => (x, true),
                None => (k.as_str(), false),
            };
            let v = content.get(key).map(|v| {
                if b64 {
                    base64::engine::general_purpose::STANDARD.encode(v)
                } else {
                    v.clone()
                }
            });
            fmt(
                p,
                &v.map(Value::String).unwrap_or(Value::Null),
                Format::Yaml,
            )
        }
        None => fmt(p, &json!(content), Format::Yaml),
    }
}

/// `secret-set`.
fn secret_set(c: Call) -> Result<Reply, SErr> {
    let Call {
        m, ctx, p, stdin, ..
    } = c;
    let s = managed(m, ctx, p, "update")?;
    let content = content_args(ctx, &p.positional[1..], p.value("file"), stdin)?;
    ctx.secrets.push(SecretOp::Set {
        id: s.id.clone(),
        content: if content.is_empty() {
            None
        } else {
            Some(content)
        },
        label: p.value("label").map(String::from),
        description: p.value("description").map(String::from),
        expire: p.value("expire").map(String::from),
        rotate: p.value("rotate").map(String::from),
    });
    Ok(Reply::ok(""))
}

/// `secret-remove`.
fn secret_remove(c: Call) -> Result<Reply, SErr> {
    let Call { m, ctx, p, .. } = c;
    let s = managed(m, ctx, p, "remove")?;
    let revision = match p.value("revision") {
        Some(r) => Some(
            r.parse::<u32>()
                .map_err(|_| SErr::Usage(format!("invalid revision {r:?}")))?,
        ),
        None => None,
    };
    ctx.secrets.push(SecretOp::Remove { id: s.id, revision });
    Ok(Reply::ok(""))
}

/// `secret-grant | secret-revoke`.
fn secret_grant(c: Call) -> Result<Reply, SErr> {
    let Call {
        m, ctx, tool, p, ..
    } = c;
    let Some(id) = p.positional.first() else {
        return usage("missing secret URI");
    };
    let Some(rel) = p.value("r") else {
        return usage("missing relation");
    };
    let rel: u32 = rel
        .rsplit(':')
        .next()
        .unwrap_or(rel)
        .parse()
        .map_err(|_| SErr::Usage(format!("invalid relation id {rel:?}")))?;
    if !m.relations.contains_key(&rel) {
        return usage(format!(
            "invalid value {rel:?} for option -r: relation not found"
        ));
    }
    // A secret added earlier in this hook is granted as Juju grants it: its metadata
    // includes the hook's pending creates (internal/worker/uniter/runner/context/context.go,
    // GrantSecret over SecretMetadata).
    let pending = ctx.secrets.iter().find_map(|op| match op {
        SecretOp::Add(s) if s.id == normalize(id) => Some(s.clone()),
        _ => None,
    });
    let s = match pending {
        Some(s) => s,
        None => find(m, ctx, Some(id), None)?.clone(),
    };
    if !can_manage(m, ctx, &s) {
        return refuse(format!(
            "permission denied: cannot change access to secret {:?}",
            s.id
        ));
    }
    let unit = p.value("unit").map(String::from);
    ctx.secrets.push(if tool == "secret-grant" {
        SecretOp::Grant {
            id: s.id,
            relation: rel,
            unit,
        }
    } else {
        SecretOp::Revoke {
            id: s.id,
            relation: rel,
            unit,
        }
    });
    Ok(Reply::ok(""))
}

/// `secret-ids`.
fn secret_ids(c: Call) -> Result<Reply, SErr> {
    let Call { m, ctx, p, .. } = c;
    let ids: Vec<String> = m
        .secrets
        .values()
        .filter(|s| s.owner == ctx.unit || s.owner == ctx.app)
        .map(|s| s.id.clone())
        .collect();
    fmt(p, &json!(ids), Format::Smart)
}

/// `secret-info-get`.
fn secret_info_get(c: Call) -> Result<Reply, SErr> {
    let Call { m, ctx, p, .. } = c;
    let id = p.positional.first().map(String::as_str);
    if id.is_none() && p.value("label").is_none() {
        return usage("require either a secret URI or label");
    }
    let s = find(m, ctx, id, p.value("label"))?;
    if !is_owner_side(ctx, s) {
        return refuse(format!("secret {:?} not found", s.id));
    }
    let mut info = Map::new();
    info.insert("revision".into(), json!(s.latest()));
    info.insert(
        "owner".into(),
        json!(if s.owner.contains('/') {
            "unit"
        } else {
            "application"
        }),
    );
    if let Some(l) = &s.label {
        info.insert("label".into(), json!(l));
    }
    if let Some(d) = &s.description {
        info.insert("description".into(), json!(d));
    }
    if let Some(e) = &s.expire {
        info.insert("expiry".into(), json!(e));
    }
    if let Some(r) = &s.rotate {
        info.insert("rotation".into(), json!(r));
    }
    fmt(
        p,
        &json!({ s.id.trim_start_matches("secret:"): info }),
        Format::Yaml,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids() {
        assert!(valid_key("ca-key"));
        assert!(valid_key("abc"));
        assert!(!valid_key("ab"));
        assert!(!valid_key("a--b"));
        assert!(!valid_key("Key"));
        assert_eq!(normalize("secret://abc/xyz"), "secret:xyz");
        assert_eq!(normalize("xyz"), "secret:xyz");
        assert!(new_id().starts_with("secret:"));
    }

    /// As Juju's `encodeBase64` (juju/juju core/secrets/secret.go): a value or a content
    /// over 1,000,000 bytes once base64-encoded is refused.
    #[test]
    fn secret_content_is_bounded_as_juju_bounds_it() {
        let bag = |vals: &[usize]| -> Bag {
            vals.iter()
                .enumerate()
                .map(|(i, n)| (format!("key-{i}"), "x".repeat(*n)))
                .collect()
        };
        assert!(check_size(&bag(&[750_000])).is_ok());
        let Err(SErr::Run(e)) = check_size(&bag(&[750_001])) else {
            panic!("a value over the bound passed")
        };
        assert!(
            e.contains("key-0") && e.contains("too large: 1000004 bytes"),
            "{e}"
        );
        let Err(SErr::Run(e)) = check_size(&bag(&[400_000, 400_000])) else {
            panic!("a content over the bound passed")
        };
        assert!(e.contains("secret content too large"), "{e}");
    }
}
