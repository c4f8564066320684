//! `network-get`, `unit-get`: a unit's addresses.

use super::common::*;

/// `network-get`.
pub(super) fn network_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(
        &[
            FORMAT,
            OUTPUT,
            value(&["r", "relation"]),
            boolean(&["bind-address"]),
            boolean(&["ingress-address"]),
            boolean(&["egress-subnets"]),
            boolean(&["primary-address"]),
        ],
        args,
    )?;
    let Some(binding) = p.positional.first() else {
        return usage("no arguments specified");
    };
    let meta = &m.apps[&ctx.app].meta;
    let known = meta.peers.contains_key(binding)
        || meta.provides.contains_key(binding)
        || meta.requires.contains_key(binding)
        || binding == "juju-info";
    if !known {
        return refuse(format!("no network config found for binding {binding:?}"));
    }
    // As Juju's network-get (internal/worker/uniter/runner/jujuc/network-get.go):
    // every address of the binding, by interface; ingress-addresses sorted as
    // core/network's sortOrder does (IPv4 before IPv6 of the same scope), whose
    // first is the one relation data carries (uniter.go EnterScope).
    let addrs = machine_addresses(m, &ctx.unit);
    let addr = unit_address(m, &ctx.unit);
    let flags_set: Vec<&str> = ["bind-address", "ingress-address", "egress-subnets"]
        .into_iter()
        .filter(|f| p.flag(f))
        .collect();
    if p.flag("primary-address") {
        return out(&json!(addr), &p, Format::Smart);
    }
    let field = |f: &str| match f {
        "egress-subnets" => json!([format!("{addr}/32")]),
        _ => json!(addr),
    };
    if flags_set.len() == 1 {
        return out(&field(flags_set[0]), &p, Format::Smart);
    }
    if flags_set.len() > 1 {
        let mp: Map<String, Value> = flags_set
            .iter()
            .map(|f| (f.to_string(), field(f)))
            .collect();
        return out(&Value::Object(mp), &p, Format::Smart);
    }
    let mut binds: Vec<Value> = vec![];
    for iface in ["eth0", "eth1"] {
        let on: Vec<Value> = addrs
            .iter()
            .filter(|a| a.0 == iface)
            .map(|(_, v, cidr)| json!({"hostname": "", "value": v, "cidr": cidr}))
            .collect();
        if !on.is_empty() {
            binds.push(json!({"mac-address": "", "interface-name": iface, "addresses": on}));
        }
    }
    let mut ingress: Vec<&(String, String, String)> = addrs.iter().collect();
    ingress.sort_by_key(|a| a.1.contains(':'));
    let v = json!({
        "bind-addresses": binds,
        "egress-subnets": [format!("{addr}/32")],
        "ingress-addresses": ingress.iter().map(|a| a.1.clone()).collect::<Vec<_>>(),
    });
    out(&v, &p, Format::Smart)
}

/// `unit-get`.
pub(super) fn unit_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT], args)?;
    match p.positional.first().map(String::as_str) {
        Some("private-address") | Some("public-address") => {
            let addr = unit_address(m, &ctx.unit);
            out(&json!(addr), &p, Format::Smart)
        }
        Some(other) => usage(format!("unknown setting {other:?}")),
        None => usage("no setting specified"),
    }
}
