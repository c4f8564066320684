//! `open-port`, `close-port`, `opened-ports`.

use super::common::*;

/// `open-port | close-port`.
pub(super) fn open_port(c: Call) -> R {
    let Call {
        ctx, tool, args, ..
    } = c;
    let p = parse(&[FORMAT, value(&["endpoints"])], args)?;
    let Some(a) = p.positional.first() else {
        return usage("no port or range specified");
    };
    if p.positional.len() > 1 {
        return usage(format!("unrecognized args: {:?}", &p.positional[1..]));
    }
    let port = normalize_port(&a.to_lowercase()).map_err(E::Usage)?;
    ctx.ports.push((tool == "open-port", port));
    Ok(Reply::ok(""))
}

/// `opened-ports`.
pub(super) fn opened_ports(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT, boolean(&["endpoints"])], args)?;
    let ports: Vec<String> = m
        .units
        .get(&ctx.unit)
        .map(|u| {
            u.ports
                .iter()
                .map(|x| {
                    if p.flag("endpoints") {
                        format!("{x} (*)")
                    } else {
                        x.clone()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out(&json!(ports), &p, Format::Smart)
}
