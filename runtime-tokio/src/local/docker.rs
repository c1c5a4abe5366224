//! Docker exec checks: `args` run inside a container through the Engine API (create an exec, start it
//! attached, read its output, inspect its exit code), as Consul's `CheckDocker` does. The daemon is
//! `DOCKER_HOST` (`unix://` only) or the local socket; the API version is negotiated once, so older
//! daemons answer too.
//!
//! Exit 0 is passing, 1 warning, anything else critical; an unreachable daemon, a missing container or
//! the timeout are critical with the reason as output. Output (stdout and stderr) is capped at 4 KiB.

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use concord_core::agent::MAX_OUTPUT;
use concord_core::state::CheckStatus;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::OnceCell;

/// One negotiated client per process (a failed connection is retried on the next run).
async fn docker() -> Result<&'static Docker, String> {
    static CLIENT: OnceCell<Docker> = OnceCell::const_new();
    CLIENT
        .get_or_try_init(|| async {
            let docker = Docker::connect_with_local_defaults().map_err(|e| format!("docker: {e}"))?;
            docker
                .negotiate_version()
                .await
                .map_err(|e| format!("cannot reach the Docker daemon: {e}"))
        })
        .await
}

pub(crate) async fn check(container: &str, args: &[String], timeout: Duration) -> (CheckStatus, String) {
    match tokio::time::timeout(timeout, exec(container, args)).await {
        Ok(Ok((code, output))) => {
            let status = match code {
                0 => CheckStatus::Passing,
                1 => CheckStatus::Warning,
                _ => CheckStatus::Critical,
            };
            (status, output)
        }
        Ok(Err(e)) => (CheckStatus::Critical, e),
        Err(_) => (CheckStatus::Critical, format!("Timed out ({timeout:?}) running check")),
    }
}

/// (exit code, output) of `args` in `container`.
async fn exec(container: &str, args: &[String]) -> Result<(i64, String), String> {
    let docker = docker().await?;
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(args.to_vec()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("Error creating exec in container {container}: {e}"))?;
    let started = docker
        .start_exec(&created.id, Some(StartExecOptions::default()))
        .await
        .map_err(|e| format!("Error starting exec in container {container}: {e}"))?;
    let mut kept = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = started {
        // Read to the end (the exec finishes when its output closes), keeping the first MAX_OUTPUT bytes.
        while let Some(chunk) = output.next().await {
            let bytes = match chunk.map_err(|e| format!("Error reading exec output: {e}"))? {
                LogOutput::StdOut { message } | LogOutput::StdErr { message } | LogOutput::Console { message } => {
                    message
                }
                LogOutput::StdIn { .. } => continue,
            };
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }
    let inspected = docker
        .inspect_exec(&created.id)
        .await
        .map_err(|e| format!("Error inspecting exec in container {container}: {e}"))?;
    let code = inspected
        .exit_code
        .ok_or_else(|| format!("exec in container {container} reported no exit code"))?;
    Ok((code, String::from_utf8_lossy(&kept).into_owned()))
}
