//! The `etcd-client` options.

/// `etcd_client_full_access`: application names, separated by spaces or commas (Juju's
/// application name rule: lowercase letters, digits and hyphens, a letter first; at most 32).
pub fn app_names(raw: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = raw
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() > 32 {
        return Err(format!(
            "invalid config: etcd_client_full_access names {} applications (at most 32)",
            names.len()
        ));
    }
    for n in &names {
        let ok = n.len() <= 63
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !n.ends_with('-');
        if !ok {
            return Err(format!(
                "invalid config: etcd_client_full_access entry {:?} is not an application name (lowercase letters, digits and hyphens, a letter first)",
                hostkit::text::bounded(n, 64)
            ));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::app_names;

    #[test]
    fn full_access_names_applications_and_refuses_anything_else() {
        assert_eq!(
            app_names(" kube-a, vault  b2 ").unwrap(),
            ["kube-a", "vault", "b2"]
        );
        assert!(app_names("").unwrap().is_empty());
        for bad in ["Kube", "a_b", "-a", "a-", "ünï", "a/0", "1abc"] {
            let e = app_names(bad).unwrap_err();
            assert!(e.contains("etcd_client_full_access"), "{bad}: {e}");
        }
        assert!(app_names(&"a ".repeat(33)).is_err());
    }
}
