//! Who this agent is: its node ID (chosen once, kept in `<data_dir>/node-id`), the address other servers
//! dial, and the normalised addresses it joins.

use super::AgentError;
use concord_core::NodeId;
use rand::RngCore;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// A fresh random node ID (a version-4 UUID, as Consul generates).
pub fn random_node_id() -> NodeId {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut id = u128::from_be_bytes(bytes);
    id = (id & !(0xf << 76)) | (0x4 << 76); // version 4
    id = (id & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    NodeId(id)
}

/// A seed for the node's RNG, from the OS.
pub fn random_seed() -> u64 {
    rand::rngs::OsRng.next_u64()
}

/// The node ID: `-node-id` if given (and then it must match a stored one), else the one stored in
/// `<data_dir>/node-id`, else a new random one, stored there for every later start.
pub fn node_id(configured: Option<&str>, data_dir: Option<&Path>) -> Result<NodeId, AgentError> {
    let configured = configured
        .map(|s| s.trim().to_ascii_lowercase().parse::<NodeId>())
        .transpose()
        .map_err(|e| AgentError::Config(e.to_string()))?;
    let Some(dir) = data_dir else {
        return Ok(configured.unwrap_or_else(random_node_id));
    };
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(stored) => {
            let stored: NodeId = stored.trim().to_ascii_lowercase().parse().map_err(|e| {
                AgentError::DataDir(format!("{}: {e}; remove the file to pick a new ID", path.display()))
            })?;
            if let Some(configured) = configured.filter(|c| *c != stored) {
                return Err(AgentError::Config(format!(
                    "-node-id {configured} differs from the ID {stored} stored in {}",
                    path.display()
                )));
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = configured.unwrap_or_else(random_node_id);
            write_durably(&path, id.to_string().as_bytes())
                .map_err(|e| AgentError::DataDir(format!("cannot write {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(AgentError::DataDir(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Write `bytes` to a temporary name, sync, and rename over `path`, so a crash leaves either no file or
/// the whole one.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Consul's "private" IPv4 ranges (RFC 6890 private-use and shared address space).
fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || (a == 100 && (64..128).contains(&b)) || (a == 198 && (b == 18 || b == 19))
}

/// The single private IPv4 among `candidates`, as Consul picks when `-bind` is `0.0.0.0`.
pub fn single_private_ipv4(candidates: &[IpAddr]) -> Result<IpAddr, AgentError> {
    let mut private: Vec<Ipv4Addr> = candidates
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if is_private_v4(*v4) && !v4.is_loopback() => Some(*v4),
            _ => None,
        })
        .collect();
    private.sort();
    private.dedup();
    match private.as_slice() {
        [one] => Ok(IpAddr::V4(*one)),
        [] => Err(AgentError::Address(
            "No private IPv4 address found; set one with -bind and/or -advertise".into(),
        )),
        many => Err(AgentError::Address(format!(
            "Multiple private IPv4 addresses found ({}). Please configure one with 'bind' and/or 'advertise'.",
            many.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The address other servers reach this one at: `-advertise`, else `-bind`, with `0.0.0.0` resolved to
/// the host's single private IPv4.
pub fn advertise_ip(bind: IpAddr, advertise: Option<IpAddr>) -> Result<IpAddr, AgentError> {
    if let Some(ip) = advertise.filter(|ip| !ip.is_unspecified()) {
        return Ok(ip);
    }
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => {
            let interfaces = if_addrs::get_if_addrs()
                .map_err(|e| AgentError::Address(format!("cannot list network interfaces: {e}")))?;
            single_private_ipv4(&interfaces.iter().map(|i| i.ip()).collect::<Vec<_>>())
        }
        IpAddr::V6(v6) if v6.is_unspecified() => Err(AgentError::Address(
            "-bind [::] needs an explicit -advertise address".into(),
        )),
        ip => Ok(ip),
    }
}

/// `ip:port`, with brackets for IPv6.
pub fn socket_string(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}
