//! Alias checks: the aggregate health of another node or service, computed from that node's checks (Consul's
//! `CheckAlias.processChecks`, so an alias reads the same as Consul's on the same input).
//!
//! Rules: only the aliased node's node-level checks and the aliased service's checks count (other
//! services' checks on the node do not); critical beats warning beats passing; no checks at all is passing
//! ("No checks found."), except that an aliased service the node does not have is critical.

use crate::state::{CheckStatus, HealthCheck};

/// The alias's status and output. `checks`: the aliased node's checks (the alias check itself excluded);
/// `service_id`: `""` to alias the node alone; `service_exists`: whether the node has that service.
pub fn alias_status(
    checks: &[HealthCheck],
    node: &str,
    service_id: &str,
    service_exists: bool,
) -> (CheckStatus, String) {
    let mut status = CheckStatus::Passing;
    let mut output = "No checks found.".to_string();
    let mut service_found = false;
    for c in checks {
        let service_match = !service_id.is_empty() && c.service_id == service_id;
        if !c.service_id.is_empty() && !service_match {
            continue;
        }
        service_found |= service_match;
        match c.status {
            CheckStatus::Critical | CheckStatus::Warning => {
                if status != CheckStatus::Critical {
                    status = c.status;
                    output = format!("Aliased check {:?} failing: {}", c.name, c.output);
                }
            }
            CheckStatus::Passing if status == CheckStatus::Passing => output = "All checks passing.".into(),
            CheckStatus::Passing => {}
        }
    }
    if !service_id.is_empty() && !service_found && !service_exists {
        return (
            CheckStatus::Critical,
            format!("Service {service_id} could not be found on node {node}"),
        );
    }
    (status, output)
}
