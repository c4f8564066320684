//! `nagios_context` and `nagios_servicegroups`: names Nagios takes.

/// `nagios_context` is a name; `nagios_servicegroups` a comma-separated list of names (or
/// empty, when `list`): what Nagios takes in a host name and a `servicegroups` line.
pub fn check_names(option: &str, value: &str, list: bool) -> Result<(), String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let ok = if list {
        value.is_empty() || value.split(',').map(str::trim).all(name_ok)
    } else {
        name_ok(value)
    };
    // The value may come from another application: it is quoted bounded, never whole.
    let shown = hostkit::text::bounded(value, 80);
    if ok {
        Ok(())
    } else if list {
        Err(format!(
            "{option} {shown:?} must be a comma-separated list of names (letters, digits, '.', '_', '-')"
        ))
    } else {
        Err(format!(
            "{option} {shown:?} must be a name of letters, digits, '.', '_' and '-' (at most 64)"
        ))
    }
}
