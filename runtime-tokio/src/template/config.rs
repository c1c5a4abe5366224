//! `concord template`'s configuration: consul-template's flags and its HCL/JSON config files
//! (`CT:cli.go`, `CT:config/*.go`). Config files merge left to right; command-line flags win;
//! templates from files and flags all run.

use super::watch::Retry;
use concord_core::api::parse_go_duration;
use std::path::PathBuf;
use std::time::Duration;

/// Quiescence: render once the data has been quiet for `min`, but never wait longer than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

/// One template to render.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TemplateSpec {
    /// The template file; `None` when the text came inline (`contents`).
    pub(crate) source: Option<PathBuf>,
    pub(crate) contents: Option<String>,
    pub(crate) destination: PathBuf,
    pub(crate) command: Option<String>,
    pub(crate) command_timeout: Duration,
    /// Mode for the written file; `None` keeps the existing file's mode (else 0644).
    pub(crate) perms: Option<u32>,
    pub(crate) backup: bool,
    pub(crate) create_dest_dirs: bool,
    pub(crate) left_delimiter: String,
    pub(crate) right_delimiter: String,
    pub(crate) wait: Option<Wait>,
}

impl TemplateSpec {
    fn new(source: Option<PathBuf>, destination: PathBuf) -> Self {
        TemplateSpec {
            source,
            contents: None,
            destination,
            command: None,
            command_timeout: Duration::from_secs(30),
            perms: None,
            backup: false,
            create_dest_dirs: true,
            left_delimiter: String::new(),
            right_delimiter: String::new(),
            wait: None,
        }
    }

    /// How the template is named in messages: its source path, or `(dynamic)` for inline contents.
    pub(crate) fn name(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "(dynamic)".into(),
        }
    }
}

/// The supervised child of `-exec`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExecSpec {
    pub(crate) command: String,
    /// Sent on a change; `None` restarts the child instead.
    pub(crate) reload_signal: Option<String>,
    pub(crate) kill_signal: String,
    pub(crate) kill_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Config {
    pub(crate) consul_addr: String,
    pub(crate) token: Option<String>,
    pub(crate) templates: Vec<TemplateSpec>,
    pub(crate) wait: Option<Wait>,
    pub(crate) once: bool,
    pub(crate) dry: bool,
    pub(crate) parse_only: bool,
    pub(crate) log_level: String,
    /// Allow stale reads when non-zero (consul-template's `max_stale`, default 2 s).
    pub(crate) max_stale: Duration,
    /// `wait=` of each blocking query.
    pub(crate) block_query_wait: Duration,
    pub(crate) retry: Retry,
    pub(crate) exec: Option<ExecSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            consul_addr: "127.0.0.1:8500".into(),
            token: None,
            templates: Vec::new(),
            wait: None,
            once: false,
            dry: false,
            parse_only: false,
            log_level: "warn".into(),
            max_stale: Duration::from_secs(2),
            block_query_wait: Duration::from_secs(60),
            retry: Retry::default(),
            exec: None,
        }
    }
}

/// `-wait "min[:max]"`: max defaults to 4×min.
pub(crate) fn parse_wait(s: &str) -> Result<Wait, String> {
    let bad = |e: String| format!("invalid wait {s:?}: {e}");
    let (min, max) = match s.split_once(':') {
        Some((min, max)) => (
            parse_go_duration(min.trim()).map_err(|e| bad(e.to_string()))?,
            Some(parse_go_duration(max.trim()).map_err(|e| bad(e.to_string()))?),
        ),
        None => (parse_go_duration(s.trim()).map_err(|e| bad(e.to_string()))?, None),
    };
    let max = max.unwrap_or(min * 4);
    if max < min {
        return Err(bad("max must be larger than min".into()));
    }
    Ok(Wait { min, max })
}

/// consul-template's `-template` value: `in:out[:command]`, split on colons as its
/// `([a-zA-Z]:)?([^:]+)` regexp does: empty fields vanish, a leading drive letter stays with its path,
/// and everything after the second field is the command, rejoined with `:`.
pub(crate) fn parse_template_flag(s: &str) -> Result<TemplateSpec, String> {
    if s.trim().is_empty() {
        return Err("-template: empty template declaration".into());
    }
    let parts = split_template_flag(s);
    let (source, destination, command) = match parts.as_slice() {
        [] => return Err(format!("-template: invalid format {s:?}")),
        [src] => (src.clone(), String::new(), None),
        [src, dst] => (src.clone(), dst.clone(), None),
        [src, dst, rest @ ..] => (src.clone(), dst.clone(), Some(rest.join(":"))),
    };
    let mut spec = TemplateSpec::new(Some(PathBuf::from(source)), PathBuf::from(destination));
    spec.command = command;
    Ok(spec)
}

fn split_template_flag(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b':' {
            i += 1;
            continue;
        }
        let start = i;
        // `([a-zA-Z]:)?` then `[^:]+`: the drive letter only counts when a non-colon follows it.
        if b[i].is_ascii_alphabetic() && b.get(i + 1) == Some(&b':') && b.get(i + 2).is_some_and(|&c| c != b':') {
            i += 2;
        }
        while i < b.len() && b[i] != b':' {
            i += 1;
        }
        parts.push(s[start..i].to_string());
    }
    parts
}

/// Merge one config file (HCL, or JSON when it starts with `{` or ends in `.json`) into `config`.
pub(crate) fn load_file(config: &mut Config, path: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("config: {path}: {e}"))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("config: {path}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            load_file(config, &p.display().to_string())?;
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("config: {path}: {e}"))?;
    let json: serde_json::Value = if path.ends_with(".json") || text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| format!("config: {path}: {e}"))?
    } else {
        hcl::from_str(&text).map_err(|e| format!("config: {path}: {e}"))?
    };
    apply_file(config, &json).map_err(|e| format!("config: {path}: {e}"))
}

/// A block that may appear once (an object) or several times (an array of objects).
fn blocks(v: Option<&serde_json::Value>) -> Vec<&serde_json::Value> {
    match v {
        Some(serde_json::Value::Array(a)) => a.iter().collect(),
        Some(v @ serde_json::Value::Object(_)) => vec![v],
        _ => Vec::new(),
    }
}

fn string(v: &serde_json::Value, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key}: expected a string, got {other}")),
    }
}

fn boolean(v: &serde_json::Value, key: &str) -> Result<Option<bool>, String> {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!("{key}: expected true or false, got {other}")),
    }
}

fn duration(v: &serde_json::Value, key: &str) -> Result<Option<Duration>, String> {
    match string(v, key)? {
        None => Ok(None),
        Some(s) => parse_go_duration(&s).map(Some).map_err(|e| format!("{key}: {e}")),
    }
}

/// `wait = "5s:10s"` or `wait { min = "5s" max = "10s" }`.
fn wait_block(v: Option<&serde_json::Value>) -> Result<Option<Wait>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => parse_wait(s).map(Some),
        Some(obj @ serde_json::Value::Object(_)) => {
            let min = duration(obj, "min")?.unwrap_or_default();
            let max = duration(obj, "max")?.unwrap_or(min * 4);
            if min.is_zero() && max.is_zero() {
                return Ok(None);
            }
            Ok(Some(Wait { min, max }))
        }
        Some(other) => Err(format!("wait: expected \"min:max\" or a block, got {other}")),
    }
}

/// `perms = 0644` (HCL reads the digits as decimal 644) or `perms = "0644"`: octal either way.
fn perms(v: &serde_json::Value) -> Result<Option<u32>, String> {
    let digits = match v.get("perms") {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.trim_start_matches("0o").to_string(),
        Some(other) => return Err(format!("perms: expected an octal mode, got {other}")),
    };
    u32::from_str_radix(&digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .map(Some)
        .ok_or_else(|| format!("perms: {digits:?} is not an octal file mode"))
}

/// `command = "a b"` or `command = ["a", "b"]` (joined with spaces and run by `sh -c`).
fn command(v: &serde_json::Value) -> Result<Option<String>, String> {
    match v.get("command") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(a)) => {
            let words: Option<Vec<&str>> = a.iter().map(|w| w.as_str()).collect();
            words
                .map(|w| Some(w.join(" ")))
                .ok_or_else(|| "command: expected a list of strings".to_string())
        }
        Some(other) => Err(format!("command: expected a string, got {other}")),
    }
}

fn apply_file(config: &mut Config, json: &serde_json::Value) -> Result<(), String> {
    match json.get("consul") {
        Some(serde_json::Value::String(addr)) => config.consul_addr = addr.clone(),
        Some(block) => {
            if let Some(addr) = string(block, "address")? {
                config.consul_addr = addr;
            }
            if let Some(token) = string(block, "token")? {
                config.token = Some(token);
            }
            if let Some(retry) = blocks(block.get("retry")).first() {
                if let Some(enabled) = boolean(retry, "enabled")? {
                    config.retry.enabled = enabled;
                }
                if let Some(n) = retry.get("attempts").and_then(|n| n.as_u64()) {
                    config.retry.attempts = u32::try_from(n).unwrap_or(u32::MAX);
                }
                if let Some(d) = duration(retry, "backoff")? {
                    config.retry.backoff = d;
                }
                if let Some(d) = duration(retry, "max_backoff")? {
                    config.retry.max_backoff = d;
                }
            }
        }
        None => {}
    }
    if let Some(w) = wait_block(json.get("wait"))? {
        config.wait = Some(w);
    }
    if let Some(level) = string(json, "log_level")? {
        config.log_level = level;
    }
    if let Some(once) = boolean(json, "once")? {
        config.once = once;
    }
    if let Some(d) = duration(json, "max_stale")? {
        config.max_stale = d;
    }
    if let Some(d) = duration(json, "block_query_wait")? {
        config.block_query_wait = d;
    }
    for block in blocks(json.get("exec")) {
        if let Some(cmd) = command(block)? {
            config.exec = Some(ExecSpec {
                command: cmd,
                reload_signal: string(block, "reload_signal")?.filter(|s| !s.is_empty()),
                kill_signal: string(block, "kill_signal")?.unwrap_or_else(|| "SIGINT".into()),
                kill_timeout: duration(block, "kill_timeout")?.unwrap_or(Duration::from_secs(30)),
            });
        }
    }
    for block in blocks(json.get("template")) {
        config.templates.push(template_block(block)?);
    }
    Ok(())
}

fn template_block(block: &serde_json::Value) -> Result<TemplateSpec, String> {
    let source = string(block, "source")?.map(PathBuf::from);
    let contents = string(block, "contents")?;
    if source.is_some() == contents.is_some() {
        return Err("template: exactly one of source and contents is required".into());
    }
    let destination = string(block, "destination")?.unwrap_or_default();
    let mut spec = TemplateSpec::new(source, PathBuf::from(destination));
    spec.contents = contents;
    spec.command = command(block)?;
    // The newer form: `exec { command = … timeout = … }` inside the template block.
    if let Some(exec) = blocks(block.get("exec")).first() {
        if let Some(cmd) = command(exec)? {
            spec.command = Some(cmd);
        }
        if let Some(t) = duration(exec, "timeout")? {
            spec.command_timeout = t;
        }
    }
    if let Some(t) = duration(block, "command_timeout")? {
        spec.command_timeout = t;
    }
    spec.perms = perms(block)?;
    spec.backup = boolean(block, "backup")?.unwrap_or(false);
    spec.create_dest_dirs = boolean(block, "create_dest_dirs")?.unwrap_or(true);
    spec.left_delimiter = string(block, "left_delimiter")?.unwrap_or_default();
    spec.right_delimiter = string(block, "right_delimiter")?.unwrap_or_default();
    spec.wait = wait_block(block.get("wait"))?;
    Ok(spec)
}
