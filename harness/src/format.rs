//! Juju's output formatters (`--format smart|yaml|json`), byte for byte where clients care:
//! json prints `null` for nothing; yaml prints nothing; smart prints strings raw, lists of
//! strings one per line, booleans as `True`/`False`, and everything else as YAML.

use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Smart,
    Yaml,
    Json,
}

impl Format {
    pub fn parse(s: Option<&str>, default: Format) -> Result<Format, String> {
        match s {
            None => Ok(default),
            Some("smart") => Ok(Format::Smart),
            Some("yaml") => Ok(Format::Yaml),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!(
                "invalid value {other:?} for option --format: unknown format {other:?}"
            )),
        }
    }
}

fn yaml(v: &Value) -> String {
    let mut s = serde_yaml::to_string(v).unwrap_or_default();
    while s.ends_with("\n\n") {
        s.pop();
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

pub fn render(v: &Value, f: Format) -> String {
    match f {
        Format::Json => {
            let mut s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
            s.push('\n');
            s
        }
        Format::Yaml => match v {
            Value::Null => String::new(),
            _ => yaml(v),
        },
        Format::Smart => match v {
            Value::Null => String::new(),
            Value::String(s) if s.is_empty() => String::new(),
            Value::String(s) => format!("{s}\n"),
            Value::Bool(b) => {
                if *b {
                    "True\n".into()
                } else {
                    "False\n".into()
                }
            }
            Value::Array(items) if items.iter().all(Value::is_string) => items
                .iter()
                .map(|i| format!("{}\n", i.as_str().unwrap_or("")))
                .collect(),
            _ => yaml(v),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nulls_and_smart_forms() {
        assert_eq!(render(&Value::Null, Format::Json), "null\n");
        assert_eq!(render(&Value::Null, Format::Yaml), "");
        assert_eq!(render(&Value::Null, Format::Smart), "");
        assert_eq!(render(&json!(true), Format::Smart), "True\n");
        assert_eq!(render(&json!(["a", "b"]), Format::Smart), "a\nb\n");
        assert_eq!(render(&json!("x"), Format::Smart), "x\n");
        assert_eq!(
            render(&json!({"b": 1, "a": "x"}), Format::Json),
            "{\"a\":\"x\",\"b\":1}\n"
        );
        assert_eq!(render(&json!({"a": "x"}), Format::Smart), "a: x\n");
    }
}
