//! `concord template`: consul-template, against a concord (or Consul) agent. The language lives in
//! `concord_core::template`; this module is the daemon around it: configuration, one watch per
//! dependency, quiescence, atomic writes, commands and the `-exec` child.

mod config;
mod output;
mod runner;
#[cfg(test)]
pub(crate) mod tests;
mod watch;

use crate::cli::flags::{FlagError, FlagSet};
use crate::cli::Io;
use config::{Config, ExecSpec};
use std::time::Duration;

const HELP: &str = r#"Usage: concord template [options]

  Watches a series of templates on the file system, writing new changes when Consul is updated. It runs
  until an interrupt is received unless the -once flag is specified.

  Example:

    $ concord template -template "nginx.ctmpl:/etc/nginx/conf.d/up.conf:nginx -s reload"

Options:"#;

fn flag_set() -> FlagSet {
    FlagSet::new()
        .list("template", "Adds a new template to watch on disk in the format 'in:out(:command)'. Can be repeated.")
        .list("config", "Sets the path to a configuration file or folder on disk (HCL or JSON). Can be repeated.")
        .string("consul-addr", "", "Sets the address of the Consul instance (also CONSUL_HTTP_ADDR; default 127.0.0.1:8500).")
        .string("consul-token", "", "Sets the Consul API token (also CONSUL_TOKEN or CONSUL_HTTP_TOKEN).")
        .string("consul-retry-attempts", "", "The number of attempts to use when retrying failed communications (default 12; 0 retries forever).")
        .string("consul-retry-backoff", "", "The base amount to use for the backoff duration (default 250ms).")
        .string("consul-retry-max-backoff", "", "The maximum limit of the retry backoff duration (default 1m).")
        .string("wait", "", "Sets the 'min(:max)' amount of time to wait before writing a template (max defaults to 4*min).")
        .bool("once", "Do not run the process as a daemon: render each template once and exit.")
        .bool("dry", "Print generated templates to stdout instead of rendering.")
        .bool("parse-only", "Do not process templates, just parse them for errors and exit.")
        .string("log-level", "", "Set the logging level: trace, debug, info, warn, err (default warn).")
        .string("max-stale", "", "Set the maximum staleness and allow stale queries to Consul (default 2s).")
        .string("exec", "", "Enable exec mode to run as a supervisor-like process: the given command is run after all templates render.")
        .string("exec-reload-signal", "", "Signal sent to the child process on a change (default: restart the child).")
        .string("exec-kill-signal", "SIGINT", "Signal sent to the child process on shutdown.")
        .string("exec-kill-timeout", "30s", "Time to wait for the child to exit after the kill signal.")
        .bool("v", "Print the version and exit.")
        .bool("version", "Print the version and exit.")
}

/// Build the configuration: config files in order, then flags (which win), then templates from both.
fn parse_args(args: &[String], io: &mut Io<'_>) -> Result<Config, i32> {
    let mut fs = flag_set();
    match fs.parse(args) {
        Ok(()) => {}
        Err(FlagError::Help) => {
            io.info(format!("{HELP}\n{}", fs.usage()));
            return Err(0);
        }
        Err(FlagError::Bad(msg)) => return Err(io.error(format!("{msg}\n\n{HELP}"))),
    }
    if fs.get_bool("v") || fs.get_bool("version") {
        io.info(format!("concord template v{}", env!("CARGO_PKG_VERSION")));
        return Err(0);
    }
    if let Some(extra) = fs.args().first() {
        return Err(io.error(format!("extra args: {extra:?}")));
    }
    let mut config = Config::default();
    if let Some(addr) = (io.env)("CONSUL_HTTP_ADDR").filter(|a| !a.is_empty()) {
        config.consul_addr = addr;
    }
    config.token = ["CONSUL_TOKEN", "CONSUL_HTTP_TOKEN"]
        .iter()
        .find_map(|k| (io.env)(k).filter(|t| !t.is_empty()));
    for path in fs.get_list("config") {
        config::load_file(&mut config, path).map_err(|e| io.error(e))?;
    }
    let fail = |io: &mut Io<'_>, e: String| io.error(e);
    if !fs.get_str("consul-addr").is_empty() {
        config.consul_addr = fs.get_str("consul-addr").to_string();
    }
    if !fs.get_str("consul-token").is_empty() {
        config.token = Some(fs.get_str("consul-token").to_string());
    }
    if !fs.get_str("consul-retry-attempts").is_empty() {
        config.retry.attempts = fs
            .get_str("consul-retry-attempts")
            .parse()
            .map_err(|_| fail(io, "-consul-retry-attempts: expected a number".into()))?;
    }
    for (flag, slot) in [
        ("consul-retry-backoff", &mut config.retry.backoff),
        ("consul-retry-max-backoff", &mut config.retry.max_backoff),
    ] {
        if !fs.get_str(flag).is_empty() {
            *slot = concord_core::api::parse_go_duration(fs.get_str(flag))
                .map_err(|e| fail(io, format!("-{flag}: {e}")))?;
        }
    }
    if !fs.get_str("wait").is_empty() {
        config.wait = Some(config::parse_wait(fs.get_str("wait")).map_err(|e| fail(io, e))?);
    }
    if !fs.get_str("max-stale").is_empty() {
        config.max_stale = concord_core::api::parse_go_duration(fs.get_str("max-stale"))
            .map_err(|e| fail(io, format!("-max-stale: {e}")))?;
    }
    if !fs.get_str("log-level").is_empty() {
        config.log_level = fs.get_str("log-level").to_string();
    }
    config.once |= fs.get_bool("once");
    config.dry |= fs.get_bool("dry");
    config.parse_only = fs.get_bool("parse-only");
    if !fs.get_str("exec").is_empty() {
        let kill_timeout = concord_core::api::parse_go_duration(fs.get_str("exec-kill-timeout"))
            .map_err(|e| fail(io, format!("-exec-kill-timeout: {e}")))?;
        config.exec = Some(ExecSpec {
            command: fs.get_str("exec").to_string(),
            reload_signal: Some(fs.get_str("exec-reload-signal").to_string()).filter(|s| !s.is_empty()),
            kill_signal: fs.get_str("exec-kill-signal").to_string(),
            kill_timeout: if kill_timeout.is_zero() {
                Duration::from_secs(30)
            } else {
                kill_timeout
            },
        });
    }
    for value in fs.get_list("template") {
        config
            .templates
            .push(config::parse_template_flag(value).map_err(|e| fail(io, e))?);
    }
    if config.templates.is_empty() {
        return Err(io.error(format!(
            "At least one -template or a template block in -config is required.\n\n{HELP}"
        )));
    }
    if !config.dry && !config.parse_only {
        if let Some(t) = config.templates.iter().find(|t| t.destination.as_os_str().is_empty()) {
            return Err(io.error(format!("template {}: a destination is required", t.name())));
        }
    }
    Ok(config)
}

pub(crate) fn init_logging(level: &str) -> Result<(), String> {
    use tracing_subscriber::filter::LevelFilter;
    let level = match level.trim().to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "" | "warn" | "warning" => LevelFilter::WARN,
        "err" | "error" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        other => {
            return Err(format!(
                "invalid log level {other:?}: use trace, debug, info, warn or err"
            ))
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    Ok(())
}

/// `concord template [options]`.
pub(crate) fn run_cli(args: &[String], io: &mut Io<'_>) -> i32 {
    let config = match parse_args(args, io) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = init_logging(&config.log_level) {
        return io.error(e);
    }
    if config.parse_only {
        return match runner::load_templates(&config.templates) {
            Ok(_) => 0,
            Err(e) => io.error(e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return io.error(format!("cannot start the runtime: {e}")),
    };
    let env = runner::Env {
        vars: Box::new(|k: &str| std::env::var(k).ok()),
        stdout: Box::new(std::io::stdout()),
    };
    match runtime.block_on(runner::run(config, env, shutdown_signal())) {
        Ok(code) => code,
        Err(e) => io.error(e),
    }
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
