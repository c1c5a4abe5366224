//! consul-template source text (the user's own file, but often generated or copied). Lexing, parsing and
//! rendering never panic; rendering is deterministic and stays within its output budget, with no data and
//! with a canned answer for every dependency the template asks for.

use crate::template::{parse, Dependency, RenderContext, Rendered, Template, Value, MAX_OUTPUT};
use std::collections::BTreeMap;

/// The delimiter pairs a target input can pick with its first byte (`left_delimiter`/`right_delimiter`).
const DELIMITERS: &[(&str, &str)] = &[("", ""), ("[[", "]]"), ("<%", "%>"), ("{", "}")];

/// A plausible answer for any dependency: a string for single keys, a list of one catalog/KV-shaped map
/// for everything else, so field access and `range` both find something.
fn canned(dep: &Dependency) -> Value {
    if matches!(dep, Dependency::Kv { .. }) {
        return Value::str("1");
    }
    let s = Value::str;
    let item = Value::map([
        ("Name", s("web")),
        ("ID", s("web-1")),
        ("Node", s("node-1")),
        ("Address", s("10.0.0.1")),
        ("Port", Value::Int(80)),
        ("Tags", Value::list(vec![s("a"), s("b")])),
        ("Key", s("dir/k")),
        ("Value", s("v")),
        ("Status", s("passing")),
        ("Meta", Value::map([("k", s("v"))])),
    ]);
    Value::list(vec![item])
}

fn render(t: &Template, data: &BTreeMap<Dependency, Value>) -> Option<Rendered> {
    let env = |name: &str| (name == "HOME").then(|| "/root".to_string());
    let ctx = RenderContext {
        data,
        env: &env,
        now_unix: 1_700_000_000,
    };
    let rendered = t.render(&ctx).ok()?;
    assert!(rendered.output.len() <= MAX_OUTPUT, "output over the budget");
    assert_eq!(
        t.render(&ctx).ok().as_ref(),
        Some(&rendered),
        "rendering is not deterministic"
    );
    Some(rendered)
}

/// First byte: delimiter choice; the rest: template source (skipped unless UTF-8, as a template file is).
pub fn template(data: &[u8]) {
    let Some((&pick, src)) = data.split_first() else { return };
    let Ok(src) = std::str::from_utf8(src) else { return };
    let (left, right) = DELIMITERS[pick as usize % DELIMITERS.len()];
    let Ok(t) = parse(src, left, right) else { return };
    assert_eq!(t.source(), src);
    let mut data = BTreeMap::new();
    // Each pass may discover more dependencies (`range services` → `service .Name`); a few are enough.
    for _ in 0..3 {
        let Some(rendered) = render(&t, &data) else { return };
        if rendered.is_complete() {
            return;
        }
        for dep in rendered.missing {
            let value = canned(&dep);
            data.insert(dep, value);
        }
    }
}
