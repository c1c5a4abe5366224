//! `concord registrator`: gliderlabs/registrator in the concord binary. It watches a Docker engine and
//! registers every published container port as a service with a Consul (or concord) agent, and removes it
//! when the container stops.
//!
//! Module map: [`bridge`] is the pure mapping from a container to its services (registrator's rules);
//! [`docker`] the engine side (bollard); [`backend`] the agent side (HTTP on TCP or a unix socket);
//! [`daemon`] the loop that reconciles and follows events, reconnecting when the event stream drops.

mod backend;
mod bridge;
mod daemon;
mod docker;
#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod tests;

use crate::cli::flags::FlagSet;
use crate::cli::Io;
use daemon::Options;
use std::time::Duration;

const HELP: &str = r#"Usage: concord registrator [options] <registry URI>

  Registers the published ports of Docker containers as services, as gliderlabs/registrator does, and
  deregisters them when the containers stop. The engine is reached through DOCKER_HOST (unix://…) or
  /var/run/docker.sock (else /tmp/docker.sock); the agent through the registry URI:

    consul://127.0.0.1:8500          agent services (PUT /v1/agent/service/register)
    consul-tls://127.0.0.1:8501      the same over HTTPS (CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)
    consul-unix:///path/to/sock      the same over the agent's unix socket
    consulkv://127.0.0.1:8500/prefix KV entries <prefix>/<name>/<id> = "ip:port"
    consulkv-unix:///path/to/sock:/prefix

  Containers configure their services with SERVICE_NAME, SERVICE_TAGS, SERVICE_ID, SERVICE_IGNORE,
  SERVICE_CHECK_* and per-port SERVICE_<port>_* (environment or labels); every other SERVICE_* key goes into
  the service's Meta. The ACL token comes from CONSUL_HTTP_TOKEN.

  Example:

    $ concord registrator -ip 10.0.0.5 -cleanup consul://10.0.0.1:8500

Options:"#;

fn flag_set() -> FlagSet {
    FlagSet::new()
        .string(
            "ip",
            "",
            "IP for ports mapped to the host (default: the host name's address)",
        )
        .bool(
            "internal",
            "Use the container's internal IP and exposed ports instead of the published ones",
        )
        .bool("explicit", "Only register containers which have SERVICE_NAME set")
        .string(
            "useIpFromLabel",
            "",
            "Use the IP in this container label (a /cidr suffix is stripped)",
        )
        .string(
            "tags",
            "",
            "Append these comma-separated tags to every service (each may be a Go template over the container, e.g. {{.Config.Hostname}})",
        )
        .u64(
            "resync",
            "Seconds between full reconciliations with the running containers (0 = never)",
        )
        .bool(
            "cleanup",
            "Remove dangling services (this host's, for containers no longer running) when reconciling",
        )
        .string(
            "deregister",
            "always",
            "Deregister exited services \"always\" or \"on-success\"",
        )
        .string(
            "retry-attempts",
            "0",
            "Max retry attempts to reach the agent at start-up (-1 = forever)",
        )
        .string(
            "retry-interval",
            "2000",
            "Interval (in milliseconds) between retry attempts",
        )
        .u64(
            "ttl",
            "TTL for services (ignored for Consul, as by registrator; must come with -ttl-refresh)",
        )
        .u64(
            "ttl-refresh",
            "Frequency with which service TTLs are refreshed (ignored for Consul)",
        )
        .string("log-level", "info", "Log level: trace, debug, info, warn, err")
        .bool("version", "Print the version and exit")
}

/// Turns the command line (and environment) into [`Options`]; `Err` carries the one-line message.
pub(crate) fn parse(fs: &FlagSet, env: &crate::cli::Env<'_>, hostname: String) -> Result<Options, String> {
    let uri = match fs.args() {
        [] => return Err("Missing required argument for registry URI (e.g. consul://127.0.0.1:8500)".into()),
        [uri] => uri,
        [_, extra @ ..] => {
            return Err(format!(
                "Extra unknown arguments: {extra:?} (options go before the URI)"
            ))
        }
    };
    let backend = backend::parse_uri(uri)?;
    let deregister_on_success = match fs.get_str("deregister") {
        "always" => false,
        "on-success" => true,
        other => {
            return Err(format!(
                "-deregister must be \"always\" or \"on-success\", not {other:?}"
            ))
        }
    };
    let retry_attempts: i64 = fs
        .get_str("retry-attempts")
        .parse()
        .ok()
        .filter(|n| *n >= -1)
        .ok_or_else(|| {
            format!(
                "-retry-attempts must be a number >= -1, not {:?}",
                fs.get_str("retry-attempts")
            )
        })?;
    let retry_interval: u64 = fs
        .get_str("retry-interval")
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "-retry-interval must be a number of milliseconds greater than 0, not {:?}",
                fs.get_str("retry-interval")
            )
        })?;
    let (ttl, refresh) = (fs.get_u64("ttl"), fs.get_u64("ttl-refresh"));
    if (ttl == 0) != (refresh == 0) {
        return Err("-ttl and -ttl-refresh must be specified together or not at all".into());
    }
    if ttl > 0 && ttl <= refresh {
        return Err("-ttl must be greater than -ttl-refresh".into());
    }
    let nonempty = |name: &str| Some(fs.get_str(name).to_string()).filter(|v| !v.is_empty());
    if let Some(ip) = nonempty("ip") {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("-ip {ip:?} is not an IP address"));
        }
    }
    let tls = match backend.target {
        backend::Target::Tls(_) => {
            let file = |k: &str| env(k).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
            Some(backend::tls_config(&backend::TlsFiles {
                ca_cert: file("CONSUL_CACERT"),
                client_cert: file("CONSUL_CLIENT_CERT"),
                client_key: file("CONSUL_CLIENT_KEY"),
            })?)
        }
        _ => None,
    };
    let docker_socket = docker::socket(env("DOCKER_HOST").as_deref(), |p| std::path::Path::new(p).exists())?;
    Ok(Options {
        backend,
        token: env("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty()),
        tls,
        settings: bridge::Settings {
            hostname,
            hostname_ip: None,
            ip: nonempty("ip"),
            internal: fs.get_bool("internal"),
            explicit: fs.get_bool("explicit"),
            ip_label: nonempty("useIpFromLabel"),
            tags: fs.get_str("tags").to_string(),
        },
        resync: Some(fs.get_u64("resync")).filter(|s| *s > 0).map(Duration::from_secs),
        cleanup: fs.get_bool("cleanup"),
        deregister_on_success,
        retry_attempts,
        retry_interval: Duration::from_millis(retry_interval),
        docker_socket,
    })
}

/// This machine's host name (Go's `os.Hostname`).
fn hostname(env: &crate::cli::Env<'_>) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| env("HOSTNAME").filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// `concord registrator [options] <uri>`.
pub(crate) fn run_cli(args: &[String], io: &mut Io<'_>) -> i32 {
    let mut fs = flag_set();
    if let Err(code) = crate::cli::parse_flags(&mut fs, args, HELP, io) {
        return code;
    }
    if fs.get_bool("version") {
        io.info(format!("concord registrator v{}", env!("CARGO_PKG_VERSION")));
        return 0;
    }
    let opts = match parse(&fs, io.env, hostname(io.env)) {
        Ok(o) => o,
        Err(e) => return io.error(e),
    };
    if let Err(e) = crate::template::init_logging(fs.get_str("log-level")) {
        return io.error(e);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return io.error(format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(daemon::run(opts, crate::template::shutdown_signal())) {
        Ok(()) => 0,
        Err(e) => io.error(e),
    }
}
