//! The consul-template language: Go's `text/template` plus consul-template's functions, parsed once and
//! rendered against data the runtime fetched.
//!
//! Rendering is two-level, as in consul-template. A render pass records every [`Dependency`] it touched
//! (`used`) and those that have no data yet (`missing`); functions return empty values for missing data
//! so the pass can go on discovering more (`range services` → `service .Name`). The output counts only
//! when nothing is missing ([`Rendered::is_complete`]); otherwise the runtime fetches the missing
//! dependencies and renders again.
//!
//! Supported: Go's actions (`if`/`else if`/`else`, `range` with `break`/`continue`, `with`/`else with`,
//! variables, pipelines, parentheses, comments, `{{-`/`-}}`, custom delimiters), Go's builtins (`and or
//! not len index slice print printf println eq ne lt le gt ge html js urlquery`), the `.Tags.Contains`
//! method, and consul-template's `service services key keyOrDefault keyExists ls safeLs tree safeTree
//! node nodes datacenters env envOrDefault mustEnv file byTag byKey toJSON toJSONPretty parseJSON split
//! join contains containsAll containsAny containsNone containsNotAll in replaceAll toLower toUpper toTitle
//! trimSpace trim trimPrefix trimSuffix timestamp parseInt parseUint parseFloat parseBool add subtract
//! multiply divide modulo minimum maximum loop indent base64Encode base64Decode base64URLEncode
//! base64URLDecode`. Not supported (a parse error names them): `define`/`template`/`block`, and
//! consul-template's regex, hashing, YAML/TOML, sprig, scratch, Vault, Nomad and Connect functions.
//! `timestamp` formats in UTC.
//!
//! Invariants: rendering never panics and never reads a clock, the environment or a file itself (all
//! arrive through [`RenderContext`]); nesting is capped at [`MAX_DEPTH`], the work per render at
//! [`MAX_STEPS`] and the output at [`MAX_OUTPUT`]. Text outside actions is written verbatim; only
//! `{{-` and `-}}` trim whitespace.

mod dep;
mod exec;
mod format;
mod funcs;
mod lex;
mod parse;
#[cfg(test)]
mod tests;
mod value;

pub use dep::{Dependency, HttpRequest};
pub use parse::MAX_DEPTH;
pub use value::Value;

use std::collections::{BTreeMap, BTreeSet};

/// Work budget of one render (nodes visited plus function calls).
pub const MAX_STEPS: u64 = 10_000_000;
/// Largest output one render may produce, in bytes.
pub const MAX_OUTPUT: usize = 64 << 20;

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    src: String,
    nodes: Vec<parse::Node>,
}

/// A syntax error, at a 1-based line and column (in characters). Displays as `3:15: message`; the
/// runtime prefixes the file name, giving Go's `nginx.ctmpl:3:15: …`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// An execution error (a function failed, a field of a non-map, …), at its action's line and column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: executing: {msg}")]
pub struct RenderError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// Line and column (1-based, in characters) of byte offset `pos` in `src`.
fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(src.len());
    while !src.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &src[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl ParseError {
    fn at(src: &str, pos: usize, msg: impl Into<String>) -> Self {
        let (line, col) = line_col(src, pos);
        ParseError {
            line,
            col,
            msg: msg.into(),
        }
    }
}

/// Parse `src` with the given delimiters (empty means `{{` and `}}`).
pub fn parse(src: &str, left: &str, right: &str) -> Result<Template, ParseError> {
    let toks = lex::lex(src, left, right)?;
    let nodes = parse::Parser::new(src, toks).parse_template()?;
    Ok(Template {
        src: src.to_string(),
        nodes,
    })
}

/// What a render reads besides the template.
pub struct RenderContext<'a> {
    /// The data fetched so far, by dependency.
    pub data: &'a BTreeMap<Dependency, Value>,
    /// Environment lookup for `env`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Wall-clock time for `timestamp`: seconds since the Unix epoch, UTC.
    pub now_unix: i64,
}

/// The result of one render pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The output; meaningful only when [`Rendered::is_complete`].
    pub output: String,
    /// Every dependency the pass touched (those to keep watching).
    pub used: BTreeSet<Dependency>,
    /// Dependencies without data yet; the output is incomplete while any remain.
    pub missing: BTreeSet<Dependency>,
}

impl Rendered {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

impl Template {
    /// Render against `ctx`. An execution error while data is still missing (for instance `index` into
    /// a service list that has not arrived) is reported as an incomplete render, not as an error.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        exec::render(self, ctx, &Value::Null)
    }

    /// Render with `root` as the data (`.` and `$`), as Go's `Execute(w, data)` does; consul-template's
    /// templates have none (`render`), registrator's `-tags` templates get the container.
    pub fn render_with(&self, ctx: &RenderContext<'_>, root: &Value) -> Result<Rendered, RenderError> {
        exec::render(self, ctx, root)
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.src
    }
}
