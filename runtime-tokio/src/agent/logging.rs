//! Consul-style log lines (`2026-11-26T11:00:00.123Z [INFO]  agent: Consul agent running!`) and the
//! startup banner.

use super::AgentError;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Consul's `-log-level` names (`trace`, `debug`, `info`, `warn`, `err`/`error`).
pub fn parse_level(level: &str) -> Result<LevelFilter, AgentError> {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => Ok(LevelFilter::TRACE),
        "debug" => Ok(LevelFilter::DEBUG),
        "" | "info" => Ok(LevelFilter::INFO),
        "warn" | "warning" => Ok(LevelFilter::WARN),
        "err" | "error" => Ok(LevelFilter::ERROR),
        "off" => Ok(LevelFilter::OFF),
        other => Err(AgentError::Config(format!(
            "invalid log level {other:?}: use trace, debug, info, warn or err"
        ))),
    }
}

/// Install the global subscriber. A second call (tests) is harmless.
pub fn init(level: &str) -> Result<(), AgentError> {
    let level = parse_level(level)?;
    // Storage internals are chatty at debug; keep them at warn unless tracing everything.
    let storage = if level >= LevelFilter::TRACE {
        level
    } else {
        LevelFilter::WARN.min(level)
    };
    let filter = Targets::new()
        .with_default(level)
        .with_target("fjall", storage)
        .with_target("lsm_tree", storage);
    let fmt = tracing_subscriber::fmt::layer()
        .event_format(ConsulFormat)
        .with_writer(std::io::stderr);
    let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
    Ok(())
}

struct ConsulFormat;

impl<S, N> FormatEvent<S, N> for ConsulFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::TRACE => "[TRACE] ",
            Level::DEBUG => "[DEBUG] ",
            Level::INFO => "[INFO]  ",
            Level::WARN => "[WARN]  ",
            Level::ERROR => "[ERROR] ",
        };
        write!(
            writer,
            "{} {level}{}: ",
            utc_timestamp(SystemTime::now()),
            component(meta.target())
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// `concord::http::kv` → `http.kv`; explicit targets such as `agent.server.raft` stay as they are.
fn component(target: &str) -> String {
    target.strip_prefix("concord::").unwrap_or(target).replace("::", ".")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What the banner shows.
pub struct Banner<'a> {
    pub version: &'a str,
    pub node_id: String,
    pub node_name: &'a str,
    pub datacenter: &'a str,
    pub server: bool,
    pub bootstrap: bool,
    pub client_addrs: String,
    pub http_port: u16,
    pub dns_port: i32,
    pub cluster_addr: String,
    pub server_port: u16,
    pub serf_lan_port: u16,
    pub serf_wan_port: u16,
    pub encrypt: bool,
}

impl fmt::Display for Banner<'_> {
    /// Consul's layout: right-aligned labels, quoted values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "==> Starting Consul agent...")?;
        let rows = [
            ("Version", format!("'{}'", self.version)),
            ("Node ID", format!("'{}'", self.node_id)),
            ("Node name", format!("'{}'", self.node_name)),
            ("Datacenter", format!("'{}' (Segment: '<all>')", self.datacenter)),
            ("Server", format!("{} (Bootstrap: {})", self.server, self.bootstrap)),
            (
                "Client Addr",
                format!(
                    "[{}] (HTTP: {}, HTTPS: -1, gRPC: -1, gRPC-TLS: -1, DNS: {})",
                    self.client_addrs, self.http_port, self.dns_port
                ),
            ),
            (
                "Cluster Addr",
                format!(
                    "{} (LAN: {}, WAN: {}, RPC: {})",
                    self.cluster_addr, self.serf_lan_port, self.serf_wan_port, self.server_port
                ),
            ),
            ("Gossip Encryption", self.encrypt.to_string()),
            ("Auto-Encrypt-TLS", "false".to_string()),
            ("ACL Enabled", "false".to_string()),
            ("ACL Default Policy", "allow".to_string()),
        ];
        for (label, value) in rows {
            writeln!(f, "{label:>22}: {value}")?;
        }
        writeln!(f)?;
        writeln!(f, "==> Log data will now stream in as it occurs:")
    }
}
