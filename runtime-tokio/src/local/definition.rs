//! Service and check definitions as the agent API (`/v1/agent/service/register`, `/v1/agent/check/register`)
//! and config files (`service {}`, `checks []`) give them: any key casing, snake_case too, Go durations.

use crate::http::catalog::service_body;
use crate::http::decode::Obj;
use concord_core::agent::{CheckDef, CheckKind};
use concord_core::state::{CheckStatus, ServiceInstance};
use std::collections::BTreeMap;
use std::time::Duration;

/// Consul's default check timeouts.
const HTTP_TCP_TIMEOUT: Duration = Duration::from_secs(10);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Consul's floor for `deregister_critical_service_after`.
const MIN_DEREGISTER_AFTER: Duration = Duration::from_secs(60);

/// Where a definition came from: script checks need `enable_script_checks`, or for local config files
/// also `enable_local_script_checks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScriptPolicy {
    pub allowed: bool,
}

/// A service definition with its checks.
pub(crate) fn service(o: Obj, scripts: ScriptPolicy) -> Result<(ServiceInstance, Vec<CheckDef>), String> {
    let service = service_body(o)?;
    if service.service.is_empty() {
        return Err("Missing service name".into());
    }
    let mut checks = Vec::new();
    if let Some(c) = o.obj("Check")? {
        checks.push(check(c, scripts, false)?);
    }
    for c in o.objs("Checks")? {
        checks.push(check(c, scripts, false)?);
    }
    Ok((service, checks))
}

/// A check definition. `standalone`: registered on its own, so it needs a name.
pub(crate) fn check(o: Obj, scripts: ScriptPolicy, standalone: bool) -> Result<CheckDef, String> {
    let name = o.str("Name")?;
    if standalone && name.is_empty() {
        return Err("Missing check name".into());
    }
    let id = o.str_any(&["CheckID", "ID"])?;
    let interval = o.duration("Interval")?;
    let ttl = o.duration("TTL")?;
    let http = o.str("HTTP")?;
    let tcp = o.str("TCP")?;
    let mut args = o.strings("Args")?;
    if args.is_empty() {
        args = o.strings("ScriptArgs")?;
    }
    let grpc = o.str("GRPC")?;
    let alias_node = o.str("AliasNode")?;
    let alias_service = o.str("AliasService")?;
    let docker_container_id = o.str("DockerContainerID")?;
    let shell = o.str("Shell")?;
    let (kind, default_timeout) = if !ttl.is_zero() {
        (CheckKind::Ttl { ttl }, Duration::ZERO)
    } else if !http.is_empty() {
        let mut header = BTreeMap::new();
        if let Some(h) = o.obj("Header")? {
            for (k, v) in h.entries() {
                let values = match v {
                    serde_json::Value::Array(items) => {
                        items.iter().filter_map(|x| x.as_str().map(String::from)).collect()
                    }
                    serde_json::Value::String(s) => vec![s.clone()],
                    _ => return Err(format!("Request decode failed: Header {k:?}: expected strings")),
                };
                header.insert(k.clone(), values);
            }
        }
        let kind = CheckKind::Http {
            url: http,
            method: o.str("Method")?,
            header,
            body: o.str("Body")?,
            tls_skip_verify: o.bool("TLSSkipVerify")?,
            tls_server_name: o.str("TLSServerName")?,
        };
        (kind, HTTP_TCP_TIMEOUT)
    } else if !tcp.is_empty() {
        (CheckKind::Tcp { address: tcp }, HTTP_TCP_TIMEOUT)
    } else if !grpc.is_empty() {
        let kind = CheckKind::Grpc {
            target: grpc,
            use_tls: o.bool("GRPCUseTLS")?,
            tls_skip_verify: o.bool("TLSSkipVerify")?,
            tls_server_name: o.str("TLSServerName")?,
        };
        (kind, HTTP_TCP_TIMEOUT)
    } else if !alias_node.is_empty() || !alias_service.is_empty() {
        let kind = CheckKind::Alias {
            node: alias_node,
            service_id: alias_service,
        };
        (kind, Duration::ZERO)
    } else if !docker_container_id.is_empty() {
        // Consul counts Docker checks as script checks: they run commands, so the same switch guards them.
        if !scripts.allowed {
            return Err(
                "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true".into(),
            );
        }
        let script = o.str("Script")?;
        if args.is_empty() && !script.is_empty() {
            let sh = if shell.is_empty() { "/bin/sh" } else { shell.as_str() };
            args = vec![sh.to_string(), "-c".to_string(), script];
        }
        if args.is_empty() {
            return Err("Invalid check: a Docker check needs Args".into());
        }
        let kind = CheckKind::Docker {
            container_id: docker_container_id,
            shell,
            args,
        };
        (kind, SCRIPT_TIMEOUT)
    } else if !args.is_empty() {
        if !scripts.allowed {
            return Err(
                "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' to true".into(),
            );
        }
        (CheckKind::Script { args }, SCRIPT_TIMEOUT)
    } else {
        return Err(
            "Invalid check: TTL, HTTP, TCP, GRPC, AliasNode/AliasService, or Args (with an Interval) must be given"
                .into(),
        );
    };
    let needs_interval = !matches!(kind, CheckKind::Ttl { .. } | CheckKind::Alias { .. });
    if needs_interval && interval.is_zero() {
        return Err("Interval must be > 0 for Script, HTTP, H2PING, TCP or UDP checks".into());
    }
    let timeout = match o.duration("Timeout")? {
        d if d.is_zero() => default_timeout,
        d => d,
    };
    let deregister = match o.duration("DeregisterCriticalServiceAfter")? {
        d if d.is_zero() => None,
        d => Some(d.max(MIN_DEREGISTER_AFTER)),
    };
    let initial_status = match o.str("Status")?.as_str() {
        "" => CheckStatus::Critical,
        s => CheckStatus::parse(s).ok_or_else(|| format!("Invalid check status: {s:?}"))?,
    };
    Ok(CheckDef {
        id: if id.is_empty() && standalone { name.clone() } else { id },
        name,
        notes: o.str("Notes")?,
        service_id: o.str("ServiceID")?,
        kind,
        interval,
        timeout,
        deregister_critical_service_after: deregister,
        success_before_passing: o.u32("SuccessBeforePassing")?,
        failures_before_critical: o.u32("FailuresBeforeCritical")?,
        initial_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCRIPTS_OFF: ScriptPolicy = ScriptPolicy { allowed: false };

    #[test]
    fn snake_and_camel_case_service_definitions() {
        let v = json!({"name": "web", "port": 80, "enable_tag_override": true, "tags": ["a"],
                       "check": {"http": "http://127.0.0.1:1/health", "interval": "10s",
                                 "deregister_critical_service_after": "30s"},
                       "Checks": [{"TTL": "15s", "Status": "passing"}]});
        let (svc, checks) = service(Obj::new(&v).unwrap(), SCRIPTS_OFF).unwrap();
        assert_eq!((svc.id.as_str(), svc.port, svc.enable_tag_override), ("web", 80, true));
        assert_eq!(checks.len(), 2);
        assert!(matches!(checks[0].kind, CheckKind::Http { .. }));
        assert_eq!(checks[0].timeout, HTTP_TCP_TIMEOUT);
        assert_eq!(checks[0].deregister_critical_service_after, Some(MIN_DEREGISTER_AFTER));
        assert_eq!(checks[1].initial_status, CheckStatus::Passing);
    }

    #[test]
    fn invalid_checks_are_refused() {
        let bad = [
            json!({"Name": "c", "HTTP": "http://x"}),
            json!({"Name": "c"}),
            json!({"Name": "c", "Args": ["true"], "Interval": "1s"}),
            json!({"TTL": "1s"}),
        ];
        for v in bad {
            assert!(check(Obj::new(&v).unwrap(), SCRIPTS_OFF, true).is_err(), "{v}");
        }
        let v = json!({"Name": "c", "Args": ["true"], "Interval": "1s"});
        let def = check(Obj::new(&v).unwrap(), ScriptPolicy { allowed: true }, true).unwrap();
        assert_eq!((def.id.as_str(), def.timeout), ("c", SCRIPT_TIMEOUT));
    }

    fn parse(v: serde_json::Value, scripts: bool) -> Result<CheckDef, String> {
        check(Obj::new(&v).unwrap(), ScriptPolicy { allowed: scripts }, true)
    }

    #[test]
    fn grpc_alias_and_docker_checks_parse_in_both_casings() {
        let def = parse(
            json!({"name": "g", "grpc": "127.0.0.1:9000/db", "grpc_use_tls": true, "tls_skip_verify": true, "interval": "5s"}),
            false,
        )
        .unwrap();
        assert_eq!(
            def.kind,
            CheckKind::Grpc {
                target: "127.0.0.1:9000/db".into(),
                use_tls: true,
                tls_skip_verify: true,
                tls_server_name: String::new()
            }
        );
        assert_eq!((def.timeout, def.kind.type_name()), (HTTP_TCP_TIMEOUT, "grpc"));
        assert!(
            parse(json!({"Name": "g", "GRPC": "x:1"}), false).is_err(),
            "gRPC needs an interval"
        );

        // Alias checks need no interval.
        let def = parse(json!({"Name": "a", "AliasNode": "n2", "AliasService": "db"}), false).unwrap();
        assert_eq!(
            def.kind,
            CheckKind::Alias {
                node: "n2".into(),
                service_id: "db".into()
            }
        );

        let docker = json!({"Name": "d", "docker_container_id": "f00", "args": ["/bin/check"], "interval": "10s"});
        assert!(parse(docker.clone(), false)
            .unwrap_err()
            .contains("enable_script_checks"));
        let def = parse(docker, true).unwrap();
        assert_eq!(
            def.kind,
            CheckKind::Docker {
                container_id: "f00".into(),
                shell: String::new(),
                args: vec!["/bin/check".into()]
            }
        );
        // The legacy `Script` string runs through `Shell` (default /bin/sh).
        let def = parse(
            json!({"Name": "d", "DockerContainerID": "f00", "Shell": "/bin/bash", "Script": "exit 0", "Interval": "1s"}),
            true,
        )
        .unwrap();
        let CheckKind::Docker { args, .. } = def.kind else {
            panic!("not a Docker check")
        };
        assert_eq!(args, ["/bin/bash", "-c", "exit 0"]);
        assert!(parse(json!({"Name": "d", "DockerContainerID": "f00", "Interval": "1s"}), true).is_err());
    }
}
