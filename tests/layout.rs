//! The layout's rules, checked over the source of every crate in the workspace (no root, no
//! machine, a second to run):
//! - no import cycle between the modules of any crate: the graph of `crate::…`, `super::…`,
//!   `self::…` paths and a parent's uses of its child modules (code under `#[cfg(test)]`
//!   left out) has no strongly connected component of more than one module;
//! - the charm's top-level folders form layers: the graph between them has no cycle either;
//! - no source file over 600 lines and no function over 80, tests left out (a trailing
//!   `#[cfg(test)] mod tests` does not count).
//!
//! Rust source is read with a small scanner (comments, strings and char literals blanked
//! out, braces matched); it needs no parser because the rules only look at paths and spans.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

/// The workspace's crates: (name, source root, root file).
const CRATES: &[(&str, &str, &str)] = &[
    ("etcd-charm", "src", "main.rs"),
    ("charmkit", "charmkit/src", "lib.rs"),
    ("easyrsa", "easyrsa/src", "main.rs"),
    ("charm-harness", "harness/src", "main.rs"),
    ("etcdkit", "etcdkit/src", "lib.rs"),
    ("hostkit", "hostkit/src", "lib.rs"),
    ("s3kit", "s3kit/src", "lib.rs"),
];

/// The charm's layers, top to bottom: a module may import its own layer's other folders
/// (without a cycle) and the layers below, never one above. The crate root (`main.rs`)
/// is the top.
const LAYERS: &[&[&str]] = &[
    &["", "hook", "actions"],
    &["ops"],
    &["jobs", "monitoring", "relations"],
    &["pki"],
    &["unit"],
    &["config", "juju"],
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The source with comments, string and char literals replaced by blanks (newlines kept, so
/// line numbers hold).
fn blank(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let keep_lines = |out: &mut Vec<u8>, seg: &[u8]| {
        for &c in seg {
            out.push(if c == b'\n' { b'\n' } else { b' ' });
        }
    };
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p);
            keep_lines(&mut out, &b[i..end]);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            let mut j = i;
            loop {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            keep_lines(&mut out, &b[i..j]);
            i = j;
        } else if !prev_ident && (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r'))) && {
            let s = if c == b'b' { i + 2 } else { i + 1 };
            let hashes = b[s..].iter().take_while(|&&c| c == b'#').count();
            b.get(s + hashes) == Some(&b'"')
        } {
            let s = if c == b'b' { i + 2 } else { i + 1 };
            let hashes = b[s..].iter().take_while(|&&c| c == b'#').count();
            let mut end = vec![b'"'];
            end.extend(std::iter::repeat(b'#').take(hashes));
            let body = s + hashes + 1;
            let close = b[body..]
                .windows(end.len())
                .position(|w| w == end.as_slice())
                .expect("raw string closes")
                + body
                + end.len();
            keep_lines(&mut out, &b[i..close]);
            i = close;
        } else if c == b'"' {
            let mut j = i + 1;
            while b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            keep_lines(&mut out, &b[i..=j]);
            i = j + 1;
        } else if c == b'\'' && !prev_ident {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let close = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                // A multi-byte char: the closing quote within four bytes.
                (i + 2..(i + 6).min(b.len()))
                    .find(|&j| b[j] == b'\'')
                    .filter(|&j| {
                        std::str::from_utf8(&b[i + 1..j]).is_ok_and(|s| s.chars().count() == 1)
                    })
            };
            match close {
                Some(j) => {
                    keep_lines(&mut out, &b[i..=j]);
                    i = j + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).expect("blanked source is UTF-8")
}

/// The index of the brace closing the one opened at `open`.
fn matching(s: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (j, &c) in s.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    s.len() - 1
}

/// The source with every item under `#[cfg(test)]` blanked out.
fn without_tests(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let mut from = 0;
    while let Some(p) = s[from..].find("#[cfg(test)]") {
        let at = from + p;
        let after = at + "#[cfg(test)]".len();
        // The item ends at its first `;` (a `mod x;` or a `use`) or its matched braces.
        let semi = b[after..]
            .iter()
            .position(|&c| c == b';')
            .map(|q| after + q);
        let brace = b[after..]
            .iter()
            .position(|&c| c == b'{')
            .map(|q| after + q);
        let end = match (semi, brace) {
            (Some(sc), Some(br)) if sc < br => sc,
            (_, Some(br)) => matching(&b, br),
            (Some(sc), None) => sc,
            (None, None) => b.len() - 1,
        };
        for c in &mut b[at..=end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = end + 1;
    }
    String::from_utf8(b).unwrap()
}

/// The line where a trailing `#[cfg(test)] mod tests` starts (or the file's length).
fn code_lines(src: &str) -> usize {
    let lines: Vec<&str> = src.lines().collect();
    for (k, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]"
            && lines
                .get(k + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod tests"))
        {
            return k;
        }
    }
    lines.len()
}

struct Module {
    path: Vec<String>,
    file: PathBuf,
    code: String,
}

fn modules(src_root: &Path, root_file: &str) -> Vec<Module> {
    let mut out = vec![];
    let mut stack = vec![src_root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let rel = p.strip_prefix(src_root).unwrap();
            let mut path: Vec<String> = rel
                .parent()
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let top = path.is_empty() && p.file_name().unwrap() == root_file;
            if stem != "mod" && !top {
                path.push(stem);
            }
            let code = without_tests(&blank(&std::fs::read_to_string(&p).unwrap()));
            out.push(Module {
                path,
                file: p,
                code,
            });
        }
    }
    // A module declared only under `#[cfg(test)]` (its declaration blanked out) is a test.
    let declared = |m: &Module| {
        let Some((last, parent)) = m.path.split_last() else {
            return true;
        };
        out.iter().filter(|p| p.path == parent).any(|p| {
            p.code
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "mod" && w[1] == last)
        })
    };
    let keep: Vec<bool> = out.iter().map(declared).collect();
    let mut kept: Vec<Module> = out
        .into_iter()
        .zip(keep)
        .filter_map(|(m, k)| k.then_some(m))
        .collect();
    // A module under a test-only one is a test too.
    loop {
        let paths: BTreeSet<Vec<String>> = kept.iter().map(|m| m.path.clone()).collect();
        let before = kept.len();
        kept.retain(|m| m.path.is_empty() || paths.contains(&m.path[..m.path.len() - 1]));
        if kept.len() == before {
            return kept;
        }
    }
}

/// The module paths a path expression starting at `s` (after `crate::`/`super::`/…) names,
/// with `{a, b::c}` groups expanded; `base` is the module the prefix stands for.
fn expand(s: &str, base: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = base.to_vec();
    let mut rest = s;
    loop {
        let rest_t = rest.trim_start();
        if let Some(group) = rest_t.strip_prefix('{') {
            let bytes = group.as_bytes();
            let mut depth = 1;
            let mut start = 0;
            for (j, &c) in bytes.iter().enumerate() {
                match c {
                    b'{' => depth += 1,
                    b'}' | b',' if depth == 1 => {
                        let item = &group[start..j];
                        if item.trim() == "self" {
                            out.push(path.clone());
                        } else if !item.trim().is_empty() {
                            expand(item, &path, out);
                        }
                        start = j + 1;
                        if c == b'}' {
                            break;
                        }
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let ident: String = rest_t
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            out.push(path);
            return;
        }
        if ident == "super" {
            path.pop();
        } else if ident != "self" {
            path.push(ident.clone());
        }
        rest = &rest_t[ident.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                out.push(path);
                return;
            }
        }
    }
}

/// The longest known module that is a prefix of `p`.
fn resolve(p: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (0..=p.len())
        .rev()
        .map(|n| p[..n].to_vec())
        .find(|q| known.contains(q))
}

fn edges(mods: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in mods {
        let mut named = vec![];
        let b = m.code.as_bytes();
        for (i, _) in m.code.match_indices("::") {
            // The start of the path this `::` belongs to.
            let mut s = i;
            while s > 0 && (b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'_') {
                s -= 1;
            }
            if s > 1 && &b[s - 2..s] == b"::" {
                continue; // inside a longer path, seen from its start
            }
            let first = &m.code[s..i];
            let base: Vec<String> = match first {
                "crate" => vec![],
                "super" | "self" => m.path.clone(),
                _ => {
                    // A child module used by its bare name.
                    let mut child = m.path.clone();
                    child.push(first.to_string());
                    if known.contains(&child) && !first.is_empty() {
                        named.extend(std::iter::once(child));
                    }
                    continue;
                }
            };
            let text = if first == "super" {
                &m.code[s..]
            } else {
                &m.code[i + 2..]
            };
            expand(text, &base, &mut named);
        }
        let entry = g.entry(m.path.clone()).or_default();
        for p in named {
            if let Some(q) = resolve(&p, &known) {
                if q != m.path {
                    entry.insert(q);
                }
            }
        }
    }
    g
}

/// The strongly connected components of more than one node (Tarjan).
fn cycles<N: Ord + Clone>(g: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct T<'a, N: Ord> {
        g: &'a BTreeMap<N, BTreeSet<N>>,
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        on: BTreeSet<N>,
        stack: Vec<N>,
        next: usize,
        out: Vec<Vec<N>>,
    }
    fn visit<N: Ord + Clone>(t: &mut T<N>, v: &N) {
        t.index.insert(v.clone(), t.next);
        t.low.insert(v.clone(), t.next);
        t.next += 1;
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        let succ: Vec<N> =
            t.g.get(v)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
        for w in succ {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = vec![];
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                comp.push(w.clone());
                if &w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: vec![],
        next: 0,
        out: vec![],
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn show(p: &[String]) -> String {
    if p.is_empty() {
        "crate".into()
    } else {
        p.join("::")
    }
}

fn crates() -> Vec<(&'static str, Vec<Module>)> {
    CRATES
        .iter()
        .filter(|(_, dir, _)| root().join(dir).is_dir())
        .map(|(name, dir, file)| (*name, modules(&root().join(dir), file)))
        .collect()
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut found = vec![];
    for (name, mods) in crates() {
        for comp in cycles(&edges(&mods)) {
            let names: Vec<String> = comp.iter().map(|p| show(p)).collect();
            found.push(format!("{name}: {}", names.join(" ⇄ ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_charms_top_level_modules_form_layers() {
    let mods = modules(&root().join("src"), "main.rs");
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Which module edges make each edge between folders (for the failure's message).
    let mut why: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (from, to) in edges(&mods) {
        let f = from.first().cloned().unwrap_or_default();
        let e = top.entry(f.clone()).or_default();
        for t in to {
            let x = t.first().cloned().unwrap_or_default();
            if x != f {
                e.insert(x.clone());
                why.entry((f.clone(), x)).or_default().push(format!(
                    "{} → {}",
                    show(&from),
                    show(&t)
                ));
            }
        }
    }
    let layer = |m: &str| {
        LAYERS
            .iter()
            .position(|l| l.contains(&m))
            .unwrap_or_else(|| panic!("the folder {m} is in no layer of LAYERS"))
    };
    let mut upward = vec![];
    for ((f, t), w) in &why {
        if layer(t) < layer(f) {
            upward.push(format!("{f} → {t} (a layer above): {}", w.join(", ")));
        }
    }
    assert!(
        upward.is_empty(),
        "imports of a layer above:\n{}",
        upward.join("\n")
    );
    let found: Vec<String> = cycles(&top)
        .into_iter()
        .map(|c| {
            let mut lines = vec![c.join(" ⇄ ")];
            for ((f, t), w) in &why {
                if c.contains(f) && c.contains(t) {
                    lines.push(format!("  {f} → {t}: {}", w.join(", ")));
                }
            }
            lines.join("\n")
        })
        .collect();
    assert!(
        found.is_empty(),
        "layers that import each other:\n{}",
        found.join("\n")
    );
}

/// The controller's model: its state and its transitions, which unit tests drive without
/// root. Nothing it reaches, directly or through other modules, may touch the host.
const HARNESS_MODEL: &[&str] = &[
    "state",
    "net",
    "controller::model",
    "controller::lifecycle",
    "controller::transitions",
    "controller::charm_change",
];

/// What runs processes, namespaces, mounts, sockets or the firewall.
const HARNESS_HOST: &[&str] = &[
    "machine",
    "boot",
    "rootfs",
    "cgroups",
    "firewall",
    "server",
    "storage",
    "tools",
    "cli",
    "controller::runtime",
    "controller::machines",
    "controller::runner",
    "controller::worker",
    "controller::loops",
];

#[test]
fn the_controllers_model_reaches_nothing_that_touches_the_host() {
    let mods = modules(&root().join("harness/src"), "main.rs");
    let g = edges(&mods);
    let path = |s: &str| -> Vec<String> { s.split("::").map(String::from).collect() };
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut todo: Vec<(Vec<String>, Vec<String>)> = HARNESS_MODEL
        .iter()
        .map(|m| (path(m), vec![m.to_string()]))
        .collect();
    let mut bad = vec![];
    while let Some((m, via)) = todo.pop() {
        if !seen.insert(m.clone()) {
            continue;
        }
        if HARNESS_HOST.iter().any(|h| m.starts_with(&path(h))) {
            bad.push(via.join(" → "));
            continue;
        }
        for t in g.get(&m).into_iter().flatten() {
            let mut v = via.clone();
            v.push(show(t));
            todo.push((t.clone(), v));
        }
    }
    assert!(
        HARNESS_MODEL.iter().all(|m| g.contains_key(&path(m))),
        "a module of HARNESS_MODEL is gone: {:?}",
        g.keys().map(|k| show(k)).collect::<Vec<_>>()
    );
    assert!(
        bad.is_empty(),
        "the model reaches the host:\n{}",
        bad.join("\n")
    );
}

/// (function name, file, lines) of every function over the limit.
fn long_fns(m: &Module) -> Vec<(String, usize)> {
    let s = m.code.as_bytes();
    let mut out = vec![];
    let mut from = 0;
    while let Some(p) = m.code[from..].find("fn ") {
        let at = from + p;
        from = at + 3;
        if at > 0 && (s[at - 1].is_ascii_alphanumeric() || s[at - 1] == b'_') {
            continue;
        }
        let name: String = m.code[at + 3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body: the first `{` before any `;` (a declaration without a body has none).
        let Some(q) = s[at..].iter().position(|&c| c == b'{' || c == b';') else {
            break;
        };
        if s[at + q] == b';' {
            continue;
        }
        let open = at + q;
        let close = matching(s, open);
        let lines = m.code[at..=close].matches('\n').count() + 1;
        if lines > MAX_FN_LINES {
            out.push((name, lines));
        }
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

#[test]
fn no_source_file_is_over_600_lines_and_no_function_over_80() {
    let mut found = vec![];
    for (_, mods) in crates() {
        for m in &mods {
            let file = rel(&m.file);
            let n = code_lines(&std::fs::read_to_string(&m.file).unwrap());
            if n > MAX_FILE_LINES {
                found.push(format!("{file}: {n} lines (at most {MAX_FILE_LINES})"));
            }
            for (name, n) in long_fns(m) {
                found.push(format!(
                    "{file}: fn {name} has {n} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(found.is_empty(), "too long:\n{}", found.join("\n"));
}

/// The checker itself: a cycle it must see, and things it must not take for code.
#[test]
fn the_checker_sees_a_cycle_and_ignores_comments_strings_and_tests() {
    let m = |path: &[&str], code: &str| Module {
        path: path.iter().map(|s| s.to_string()).collect(),
        file: PathBuf::new(),
        code: without_tests(&blank(code)),
    };
    let mods = vec![
        m(&[], "mod a; mod b; fn main() { a::f() }"),
        m(
            &["a"],
            "use crate::{b::{self, g}, c};\n// crate::d::x\nfn f() { let _ = \"crate::d\"; }",
        ),
        m(
            &["b"],
            "fn g() { super::a::f() }\n#[cfg(test)]\nmod tests { use crate::d; }",
        ),
        m(&["c"], "fn h() {}"),
        m(&["d"], "fn i() { let _ = '\"'; let _ = crate::c::h(); }"),
    ];
    let g = edges(&mods);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(g[&s(&["a"])], [s(&["b"]), s(&["c"])].into_iter().collect());
    assert_eq!(g[&s(&["b"])], [s(&["a"])].into_iter().collect());
    assert_eq!(g[&s(&["d"])], [s(&["c"])].into_iter().collect());
    assert_eq!(cycles(&g), vec![vec![s(&["b"]), s(&["a"])]]);
    let long = m(
        &["x"],
        &format!(
            "fn big() {{\n{}}}\nfn small() {{}}",
            "let a = 1;\n".repeat(90)
        ),
    );
    assert_eq!(long_fns(&long), vec![("big".to_string(), 92)]);
}
