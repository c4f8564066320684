//! Durations as the options write them: `825d`, `12h`, `90m`, `60s`.

/// A duration's number and its last letter (s, m, h or d), split: "825d" → ("825", 86400).
/// Any text: the last character decides (never a byte index, which may fall inside a
/// multi-byte character).
pub fn split_duration(s: &str) -> Option<(&str, i64)> {
    let unit = s.chars().last()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    Some((&s[..s.len() - 1], mult))
}

/// "825d", "12h", "90m", "60s" → a duration between 60 s and 3650 days.
pub fn parse_lifetime(s: &str) -> Option<time::Duration> {
    let (num, mult) = split_duration(s)?;
    let n: i64 = num.trim().parse().ok()?;
    let secs = n.checked_mul(mult)?;
    (60..=3650 * 86400)
        .contains(&secs)
        .then(|| time::Duration::seconds(secs))
}
