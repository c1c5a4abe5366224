//! The runner (`CT:manager/runner.go`): renders every template, watches what they depend on, renders
//! again when that data changes, writes changed output and runs commands, and supervises `-exec`.
//!
//! Invariants: a template renders only when data it used changed (or at start); its file is written
//! and its command run only when the output differs from what is on disk; one watch serves each
//! distinct dependency, whichever templates use it; a watch no template uses any more is stopped.

use super::config::{Config, ExecSpec, TemplateSpec, Wait};
use super::output;
use super::watch::{self, Consul, Update, Watch};
use concord_core::template::{Dependency, RenderContext, Template, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A template with its render state.
struct Slot {
    spec: TemplateSpec,
    template: Template,
    /// Dependencies of the last render.
    used: BTreeSet<Dependency>,
    /// Data it used changed since its last render.
    dirty: bool,
    /// Quiescence: render at the earlier of these once dirty.
    quiet_at: Option<Instant>,
    max_at: Option<Instant>,
    /// Has rendered with complete data at least once.
    complete_once: bool,
    /// Last output printed in `-dry` mode.
    last_dry: Option<String>,
}

impl Slot {
    /// When it should render next (`now` if it has no quiescence timer), or `None` if it is clean.
    fn due_at(&self, now: Instant) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        match (self.quiet_at, self.max_at) {
            (Some(q), Some(m)) => Some(q.min(m)),
            (q, m) => Some(q.or(m).unwrap_or(now)),
        }
    }
}

/// Looks up an environment variable (for `env`).
pub(crate) type EnvLookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Everything the runner reads from its surroundings, injected so tests control it.
pub(crate) struct Env {
    pub(crate) vars: Box<EnvLookup>,
    /// Where `-dry` prints.
    pub(crate) stdout: Box<dyn Write + Send>,
}

/// Parse the template sources; errors name the file with Go's `file:line:col: message`.
pub(crate) fn load_templates(specs: &[TemplateSpec]) -> Result<Vec<Template>, String> {
    specs
        .iter()
        .map(|spec| {
            let text = match (&spec.contents, &spec.source) {
                (Some(c), _) => c.clone(),
                (None, Some(p)) => {
                    std::fs::read_to_string(p).map_err(|e| format!("failed reading template {}: {e}", p.display()))?
                }
                (None, None) => return Err("template: no source or contents".into()),
            };
            concord_core::template::parse(&text, &spec.left_delimiter, &spec.right_delimiter)
                .map_err(|e| format!("{}:{e}", spec.name()))
        })
        .collect()
}

/// Run until `-once` is done, the `-exec` child exits, or `shutdown` resolves. Returns the exit code.
pub(crate) async fn run(config: Config, mut env: Env, shutdown: impl Future<Output = ()>) -> Result<i32, String> {
    let templates = load_templates(&config.templates)?;
    let consul = Arc::new(Consul::new(
        &config.consul_addr,
        config.token.clone(),
        !config.max_stale.is_zero(),
        config.block_query_wait,
        config.retry,
    )?);
    let mut slots: Vec<Slot> = config
        .templates
        .iter()
        .cloned()
        .zip(templates)
        .map(|(spec, template)| Slot {
            spec,
            template,
            used: BTreeSet::new(),
            dirty: true,
            quiet_at: None,
            max_at: None,
            complete_once: false,
            last_dry: None,
        })
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut data: BTreeMap<Dependency, Value> = BTreeMap::new();
    let mut watches: BTreeMap<Dependency, Watch> = BTreeMap::new();
    let mut child: Option<Child> = None;
    // SIGHUP re-reads the template files, as consul-template's reload does (for the templates; the
    // configuration itself stays).
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::pin!(shutdown);
    loop {
        let changed = render_due(&mut slots, &data, &config, &mut env).await?;
        reconcile_watches(&slots, &mut watches, &mut data, &consul, &tx);
        let all_rendered = slots.iter().all(|s| s.complete_once);
        if let Some(exec) = config.exec.as_ref().filter(|_| all_rendered && !config.dry) {
            match &mut child {
                None => child = Some(spawn_child(exec)?),
                Some(c) if changed => {
                    if let Some(new) = reload_child(exec, c).await? {
                        child = Some(new);
                    }
                }
                Some(_) => {}
            }
        }
        if config.once && all_rendered && child.is_none() {
            return Ok(0);
        }
        let deadline = slots.iter().filter_map(|s| s.due_at(Instant::now())).min();
        tokio::select! {
            update = rx.recv() => {
                let Some(update) = update else { return Err("all watches ended".into()) };
                match update {
                    Update::Data(dep, value) => apply(dep, value, &mut data, &mut slots, &config),
                    Update::GaveUp(e) => return Err(e),
                }
            }
            _ = sleep_until(deadline) => {}
            _ = next_hup(&mut hup) => reload(&mut slots),
            status = wait_child(&mut child) => {
                let code = exit_code(status);
                tracing::info!(target: "template.runner", "child process exited with code {code}");
                return Ok(code);
            }
            _ = &mut shutdown => {
                if let (Some(exec), Some(c)) = (&config.exec, &mut child) {
                    stop_child(exec, c).await;
                }
                return Ok(0);
            }
        }
    }
}

/// Render every template that is due, then run the commands of those that changed. Returns whether
/// any output changed.
async fn render_due(
    slots: &mut [Slot],
    data: &BTreeMap<Dependency, Value>,
    config: &Config,
    env: &mut Env,
) -> Result<bool, String> {
    let now = Instant::now();
    let mut changed = false;
    let mut commands: Vec<(String, std::time::Duration)> = Vec::new();
    for slot in slots.iter_mut().filter(|s| s.due_at(now).is_some_and(|d| d <= now)) {
        if render(slot, data, config, env)? {
            changed = true;
            if let Some(cmd) = slot.spec.command.as_ref().filter(|_| !config.dry) {
                // Templates sharing a command (one reload for several files) run it once.
                if !commands.iter().any(|(c, _)| c == cmd) {
                    commands.push((cmd.clone(), slot.spec.command_timeout));
                }
            }
        }
    }
    for (cmd, timeout) in commands {
        tracing::info!(target: "template.runner", "executing command {cmd:?}");
        if let Err(e) = output::run_command(&cmd, timeout).await {
            tracing::error!(target: "template.runner", "{e}");
        }
    }
    Ok(changed)
}

/// Watch exactly the dependencies the templates used last: start the new ones, stop (and forget the
/// data of) the ones no template uses any more.
fn reconcile_watches(
    slots: &[Slot],
    watches: &mut BTreeMap<Dependency, Watch>,
    data: &mut BTreeMap<Dependency, Value>,
    consul: &Arc<Consul>,
    tx: &mpsc::UnboundedSender<Update>,
) {
    let needed: BTreeSet<Dependency> = slots.iter().flat_map(|s| s.used.iter().cloned()).collect();
    watches.retain(|dep, _| needed.contains(dep));
    data.retain(|dep, _| needed.contains(dep));
    for dep in needed {
        if let std::collections::btree_map::Entry::Vacant(slot) = watches.entry(dep) {
            tracing::debug!(target: "template.runner", "watching {}", slot.key());
            let w = watch::spawn(slot.key().clone(), consul.clone(), tx.clone());
            slot.insert(w);
        }
    }
}

async fn next_hup(hup: &mut Option<tokio::signal::unix::Signal>) {
    match hup {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Re-read every template; a template that no longer parses keeps its previous version.
fn reload(slots: &mut [Slot]) {
    tracing::info!(target: "template.runner", "received SIGHUP: reloading templates");
    for slot in slots.iter_mut() {
        match load_templates(std::slice::from_ref(&slot.spec)) {
            Ok(mut t) => {
                if let Some(t) = t.pop() {
                    slot.template = t;
                    slot.dirty = true;
                }
            }
            Err(e) => tracing::error!(target: "template.runner", "{e}"),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Store new data and mark the templates that used it dirty (with their quiescence timers).
fn apply(dep: Dependency, value: Value, data: &mut BTreeMap<Dependency, Value>, slots: &mut [Slot], config: &Config) {
    if data.get(&dep) == Some(&value) {
        return;
    }
    data.insert(dep.clone(), value);
    let now = Instant::now();
    for slot in slots.iter_mut().filter(|s| s.used.contains(&dep)) {
        slot.dirty = true;
        let wait: Option<Wait> = if config.once {
            None
        } else {
            slot.spec.wait.or(config.wait)
        };
        if let Some(w) = wait {
            slot.quiet_at = Some(now + w.min);
            slot.max_at = Some(slot.max_at.unwrap_or(now + w.max));
        }
    }
}

/// Render one template and write it when the output changed. Returns whether it changed (and so
/// whether its command is due).
fn render(slot: &mut Slot, data: &BTreeMap<Dependency, Value>, config: &Config, env: &mut Env) -> Result<bool, String> {
    slot.dirty = false;
    slot.quiet_at = None;
    slot.max_at = None;
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let vars = &env.vars;
    let lookup = |k: &str| vars(k);
    let ctx = RenderContext {
        data,
        env: &lookup,
        now_unix,
    };
    let rendered = slot
        .template
        .render(&ctx)
        .map_err(|e| format!("{}:{e}", slot.spec.name()))?;
    let complete = rendered.is_complete();
    slot.used = rendered.used;
    if !complete {
        tracing::debug!(
            target: "template.runner",
            "{}: waiting for {} of {} dependencies",
            slot.spec.name(),
            rendered.missing.len(),
            slot.used.len()
        );
        return Ok(false);
    }
    slot.complete_once = true;
    if config.dry {
        if slot.last_dry.as_deref() == Some(rendered.output.as_str()) {
            return Ok(false);
        }
        let _ = write!(env.stdout, "> {}\n{}", slot.spec.destination.display(), rendered.output);
        let _ = env.stdout.flush();
        slot.last_dry = Some(rendered.output);
        return Ok(true);
    }
    if !output::write_if_changed(&slot.spec, rendered.output.as_bytes())? {
        tracing::debug!(target: "template.runner", "{}: output unchanged", slot.spec.name());
        return Ok(false);
    }
    tracing::info!(
        target: "template.runner",
        "rendered {:?} => {:?}",
        slot.spec.name(),
        slot.spec.destination.display().to_string()
    );
    Ok(true)
}

fn spawn_child(exec: &ExecSpec) -> Result<Child, String> {
    tracing::info!(target: "template.runner", "running child process {:?}", exec.command);
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&exec.command)
        .spawn()
        .map_err(|e| format!("failed to run {:?}: {e}", exec.command))
}

/// After a change: signal the child, or restart it when no reload signal is configured.
async fn reload_child(exec: &ExecSpec, child: &mut Child) -> Result<Option<Child>, String> {
    match &exec.reload_signal {
        Some(sig) => {
            signal(child, sig).await;
            Ok(None)
        }
        None => {
            stop_child(exec, child).await;
            spawn_child(exec).map(Some)
        }
    }
}

/// Send the kill signal, then SIGKILL after the kill timeout.
async fn stop_child(exec: &ExecSpec, child: &mut Child) {
    signal(child, &exec.kill_signal).await;
    if tokio::time::timeout(exec.kill_timeout, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Signal the child through `kill(1)` (this crate forbids the `unsafe` a direct `kill(2)` needs).
async fn signal(child: &Child, sig: &str) {
    let Some(pid) = child.id() else { return };
    let name = sig.trim_start_matches("SIG");
    let status = tokio::process::Command::new("kill")
        .arg("-s")
        .arg(name)
        .arg(pid.to_string())
        .status()
        .await;
    if !status.is_ok_and(|s| s.success()) {
        tracing::warn!(target: "template.runner", "could not send {sig} to child {pid}");
    }
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

fn exit_code(status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 1,
    }
}
