//! A small parser with the rules of Go's gnuflag, which Juju's hook tools and CLI use:
//! flags and positional arguments may be interleaved, `--` ends the flags, `-x` and `--x` are
//! the same flag, `--x=v` and `--x v` both work, and booleans accept every spelling of Go's
//! `strconv.ParseBool` (`--application=True` from ops, `=true` from others).
//!
//! It only parses: it knows no tool and does no I/O.

use std::collections::BTreeMap;

/// One flag a command accepts. `names` are its spellings without dashes; the first is canonical.
#[derive(Clone, Copy)]
pub struct Flag {
    pub names: &'static [&'static str],
    pub takes_value: bool,
}

pub const fn boolean(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        takes_value: false,
    }
}

pub const fn value(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        takes_value: true,
    }
}

#[derive(Debug, Default, Clone)]
pub struct Parsed {
    values: BTreeMap<&'static str, Vec<String>>,
    bools: BTreeMap<&'static str, bool>,
    pub positional: Vec<String>,
    pub help: bool,
}

impl Parsed {
    pub fn flag(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }
    /// The last value given for a value flag.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }
    /// Every value given for a repeatable flag, in order.
    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses `args` against `flags`. Errors are worded as gnuflag words them; callers exit 2.
pub fn parse(flags: &[Flag], args: &[String]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            out.positional.extend(args[i..].iter().cloned());
            break;
        }
        if arg == "-" || !arg.starts_with('-') {
            out.positional.push(arg.clone());
            continue;
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name == "help" || name == "h" {
            out.help = true;
            continue;
        }
        let Some(flag) = flags.iter().find(|f| f.names.contains(&name)) else {
            return Err(format!("flag provided but not defined: -{name}"));
        };
        let canonical = flag.names[0];
        if flag.takes_value {
            let v = match inline {
                Some(v) => v,
                None => {
                    let Some(v) = args.get(i) else {
                        return Err(format!("flag needs an argument: -{name}"));
                    };
                    i += 1;
                    v.clone()
                }
            };
            out.values.entry(canonical).or_default().push(v);
        } else {
            let v = match inline {
                None => true,
                Some(v) => parse_go_bool(&v).ok_or_else(|| {
                    format!("invalid boolean value {v:?} for flag -{name}: parse error")
                })?,
            };
            out.bools.insert(canonical, v);
        }
    }
    Ok(out)
}

/// Splits `key=value` arguments the way leader-set, relation-set and action-set do:
/// at the first `=`, values untouched, duplicates refused.
pub fn key_values(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(format!("expected \"key=value\", got {a:?}"));
        };
        if k.is_empty() {
            return Err(format!("expected \"key=value\", got {a:?}"));
        }
        if out.iter().any(|(x, _)| x == k) {
            return Err(format!("key {k:?} specified more than once"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &[Flag] = &[
        value(&["format"]),
        boolean(&["application", "app"]),
        value(&["r", "relation"]),
    ];

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn interleaved_flags_and_go_booleans() {
        let p = parse(
            F,
            &s(&[
                "db",
                "--format=json",
                "-r",
                "db:1",
                "--application=True",
                "x",
            ]),
        )
        .unwrap();
        assert_eq!(p.positional, s(&["db", "x"]));
        assert_eq!(p.value("format"), Some("json"));
        assert_eq!(p.value("r"), Some("db:1"));
        assert!(p.flag("application"));
        let p = parse(F, &s(&["--app=false"])).unwrap();
        assert!(!p.flag("application"));
    }

    #[test]
    fn double_dash_ends_flags() {
        let p = parse(F, &s(&["active", "--", "-not a flag"])).unwrap();
        assert_eq!(p.positional, s(&["active", "-not a flag"]));
    }

    #[test]
    fn unknown_flag_and_bad_bool_are_errors() {
        assert!(parse(F, &s(&["--nope"]))
            .unwrap_err()
            .contains("not defined"));
        assert!(parse(F, &s(&["--application=yes"])).is_err());
        assert!(parse(F, &s(&["-r"]))
            .unwrap_err()
            .contains("needs an argument"));
    }

    #[test]
    fn key_values_rules() {
        assert_eq!(
            key_values(&s(&["a=b=c", "e="])).unwrap(),
            vec![("a".into(), "b=c".into()), ("e".into(), "".into())]
        );
        assert!(key_values(&s(&["a=1", "a=2"]))
            .unwrap_err()
            .contains("more than once"));
        assert!(key_values(&s(&["novalue"]))
            .unwrap_err()
            .contains("key=value"));
        assert!(key_values(&s(&["=v"])).is_err());
    }
}
