//! The Docker Engine side: which socket, the connection (API version negotiated down to the engine's), the
//! running containers, one container's inspect data as a [`Container`], and the event stream.

use super::bridge::{Binding, Container};
use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::Stream;
use std::collections::HashMap;
use std::path::PathBuf;

/// Seconds the engine may take to answer one request (not the event stream, which stays open).
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// The engine's socket: `DOCKER_HOST` (`unix://…`), else `/var/run/docker.sock`, else `/tmp/docker.sock`
/// (where registrator's instructions mount it inside a container).
pub(crate) fn socket(docker_host: Option<&str>, exists: impl Fn(&str) -> bool) -> Result<PathBuf, String> {
    match docker_host.filter(|h| !h.is_empty()) {
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
            _ => Err(format!(
                "DOCKER_HOST={host:?} is not supported: concord registrator talks to the engine over a unix \
                 socket (unix:///var/run/docker.sock)"
            )),
        },
        None => Ok(PathBuf::from(
            ["/var/run/docker.sock", "/tmp/docker.sock"]
                .into_iter()
                .find(|p| exists(p))
                .unwrap_or("/var/run/docker.sock"),
        )),
    }
}

/// Connects and agrees on an API version the engine speaks.
pub(crate) async fn connect(socket: &std::path::Path) -> Result<Docker, String> {
    let path = socket.display().to_string();
    let docker = Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        .map_err(|e| format!("Docker engine at unix://{path}: {e}"))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| format!("Docker engine at unix://{path}: {e}"))
}

/// IDs of the running containers.
pub(crate) async fn running(docker: &Docker) -> Result<Vec<String>, String> {
    let list = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    Ok(list.into_iter().filter_map(|c| c.id).collect())
}

/// One container, `None` if it no longer exists. A container sharing another's network
/// (`--net=container:<id>`) gets that container's address, as registrator does.
pub(crate) async fn inspect(docker: &Docker, id: &str) -> Result<Option<Container>, String> {
    let Some(mut c) = inspect_raw(docker, id).await?.map(container) else {
        return Ok(None);
    };
    if let Some(other) = c.network_mode.strip_prefix("container:").map(str::to_string) {
        if let Some(net) = inspect_raw(docker, &other).await?.map(container) {
            c.network_container_ip = net.networks.values().find(|ip| !ip.is_empty()).cloned();
        }
    }
    Ok(Some(c))
}

async fn inspect_raw(docker: &Docker, id: &str) -> Result<Option<ContainerInspectResponse>, String> {
    match docker.inspect_container(id, None).await {
        Ok(c) => Ok(Some(c)),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        Err(e) => Err(format!("inspecting container {}: {e}", short(id))),
    }
}

/// Container lifecycle events from `since` (unix seconds) on: `start` and `die`.
pub(crate) fn events(docker: &Docker, since: i64) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> {
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["start".to_string(), "die".to_string()]),
    ]);
    docker.events(Some(EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(filters),
    }))
}

/// The first 12 characters of a container ID, as Docker prints them.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// What the inspect answer says, in the bridge's terms.
pub(crate) fn container(r: ContainerInspectResponse) -> Container {
    let inspect = serde_json::to_value(&r).unwrap_or_default();
    let config = r.config.unwrap_or_default();
    let settings = r.network_settings.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let ports = settings
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|(port, bindings)| {
            let bindings = bindings
                .unwrap_or_default()
                .into_iter()
                .map(|b| Binding {
                    host_ip: b.host_ip.unwrap_or_default(),
                    host_port: b.host_port.unwrap_or_default(),
                })
                .collect();
            (port, bindings)
        })
        .collect();
    let mut exposed = config.exposed_ports.unwrap_or_default();
    exposed.sort();
    Container {
        id: r.id.unwrap_or_default(),
        name: r.name.unwrap_or_default().trim_start_matches('/').to_string(),
        image: config.image.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        network_mode: r.host_config.and_then(|h| h.network_mode).unwrap_or_default(),
        networks: settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(name, ep)| (name, ep.ip_address.unwrap_or_default()))
            .collect(),
        exposed,
        ports,
        network_container_ip: None,
        running: state.running.unwrap_or(false),
        exit_code: state.exit_code.unwrap_or(0),
        inspect,
    }
}
