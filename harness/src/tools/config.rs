//! `config-get`.

use super::common::*;

/// `config-get`.
pub(super) fn config_get(c: Call) -> R {
    let Call { m, ctx, args, .. } = c;
    let p = parse(&[FORMAT, OUTPUT, boolean(&["a", "all"])], args)?;
    if p.flag("a") && !p.positional.is_empty() {
        return usage("cannot use argument --all together with key");
    }
    let app = &m.apps[&ctx.app];
    let mut all = Map::new();
    for (k, def) in &app.meta.options {
        let v = app.config.get(k).cloned().or_else(|| def.default.clone());
        match v {
            Some(v) => {
                all.insert(k.clone(), v);
            }
            None if p.flag("a") => {
                all.insert(k.clone(), Value::Null);
            }
            None => {}
        }
    }
    match p.positional.first() {
        Some(k) => out(all.get(k).unwrap_or(&Value::Null), &p, Format::Smart),
        None => out(&Value::Object(all), &p, Format::Smart),
    }
}
