//! Text from outside (a tool's output, a value someone set) cut to a bounded size before it
//! goes into a message, a log line or a status.

/// `text` when it fits in `max` bytes, else its start and how much was cut.
pub fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… [{} bytes cut]",
        &text[..end],
        text.len() - end
    ))
}

/// The last non-empty line of a tool's output, trimmed: where tools say why they failed.
pub fn last_line(output: &str) -> &str {
    output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounded_cuts_at_a_character_boundary() {
        use super::bounded;
        assert_eq!(bounded("short", 10), "short");
        let long = "д".repeat(1000);
        let b = bounded(&long, 101);
        assert!(b.len() <= 101 + 40, "{}", b.len());
        assert!(b.ends_with("bytes cut]"), "{b}");
    }
}
