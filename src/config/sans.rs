//! `certificate_extra_sans`: names a provider's certificates carry besides the unit's
//! addresses (a load balancer's, a DNS name clients dial). Pure.

/// At most this many names: each one is in every unit's certificate request.
const MAX: usize = 32;

/// The option's names, checked: a comma-separated list of IP addresses and DNS names, `{unit}`
/// in a name standing for the unit (`etcd-0`); no wildcards. Err names the option and the entry.
pub fn parse(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = vec![];
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let shown: String = entry.chars().take(64).collect();
        let bad = |why: &str| {
            format!("invalid config: certificate_extra_sans entry {shown:?} {why}; give IP addresses and DNS names, comma-separated")
        };
        let name = match entry.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                if entry.contains('*') {
                    return Err(bad("is a wildcard (each member is named on its own)"));
                }
                check_dns(&entry.replace("{unit}", "etcd-0")).map_err(|why| bad(&why))?;
                entry.to_ascii_lowercase()
            }
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.len() > MAX {
        return Err(format!(
            "invalid config: certificate_extra_sans has {} names (at most {MAX})",
            out.len()
        ));
    }
    Ok(out)
}

fn check_dns(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    for label in name.trim_end_matches('.').split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(
                "is not a DNS name (labels of letters, digits and inner hyphens, at most 63 each)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// The names for one unit: `{unit}` replaced by the unit's name as a DNS label (`etcd/0` is
/// `etcd-0`).
pub fn for_unit(sans: &[String], unit: &str) -> Vec<String> {
    let label = unit.replace('/', "-").to_ascii_lowercase();
    sans.iter().map(|s| s.replace("{unit}", &label)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_the_unit_placeholder_is_filled() {
        let sans =
            parse(" etcd.example.com, 10.0.0.9,{unit}.etcd.internal,,etcd.example.com ").unwrap();
        assert_eq!(
            sans,
            ["etcd.example.com", "10.0.0.9", "{unit}.etcd.internal"]
        );
        assert_eq!(
            for_unit(&sans, "etcd/3"),
            ["etcd.example.com", "10.0.0.9", "etcd-3.etcd.internal"]
        );
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
        assert_eq!(parse("::1").unwrap(), ["::1"]);
    }

    #[test]
    fn bad_names_are_refused_by_name() {
        for bad in [
            "*.example.com",
            "exa mple.com",
            "-x.com",
            "é.com",
            "a..b",
            "x_y.com",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("certificate_extra_sans"), "{e}");
        }
        let many: Vec<String> = (0..40).map(|i| format!("h{i}.example.com")).collect();
        assert!(parse(&many.join(",")).unwrap_err().contains("at most 32"));
        let long = "a".repeat(300);
        let e = parse(&long).unwrap_err();
        assert!(e.len() < 300, "the entry is shown bounded: {e}");
    }
}
