//! `concord <command>`: Consul's CLI verbs, flags and output formats. `agent` runs the agent; every other
//! command talks to an agent's HTTP API, exactly as `consul <command>` would.
//!
//! Output rules, as Consul's `cli.Ui`: results go to stdout, errors are one line on stderr, and a
//! failing command exits 1.

mod catalog;
#[cfg(test)]
mod catalog_tests;
pub(crate) mod client;
mod event;
pub(crate) mod flags;
mod kv;
mod members;
mod ops;
mod rtt;
#[cfg(test)]
mod tests;
mod watch;

use flags::{FlagError, FlagSet};
use std::io::{Read, Write};

/// Looks up an environment variable (injected so tests do not depend on the process environment).
pub(crate) type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Where a command reads and writes.
pub(crate) struct Io<'a> {
    pub(crate) out: &'a mut dyn Write,
    pub(crate) err: &'a mut dyn Write,
    pub(crate) stdin: &'a mut dyn Read,
    pub(crate) env: &'a Env<'a>,
}

impl Io<'_> {
    /// A result line on stdout (`cli.Ui.Info`/`Output`).
    pub(crate) fn info(&mut self, line: impl AsRef<[u8]>) {
        let _ = self.out.write_all(line.as_ref());
        let _ = self.out.write_all(b"\n");
    }

    /// An error line on stderr; returns the exit code 1 for convenience.
    pub(crate) fn error(&mut self, line: impl AsRef<str>) -> i32 {
        let _ = writeln!(self.err, "{}", line.as_ref());
        1
    }
}

/// Run `concord` with `args` (without the program name) on the process's stdio. Returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let env = |k: &str| std::env::var(k).ok();
    let (mut stdout, mut stderr, mut stdin) = (std::io::stdout(), std::io::stderr(), std::io::stdin());
    let mut io = Io {
        out: &mut stdout,
        err: &mut stderr,
        stdin: &mut stdin,
        env: &env,
    };
    run_with(args, &mut io)
}

const USAGE: &str = "Usage: concord [--version] [--help] <command> [<args>]

Available commands are:
    agent          Runs a concord agent
    catalog        Interact with the catalog
    event          Fire a new event
    force-leave    Forces a member of the cluster to enter the \"left\" state
    info           Provides debugging information for operators.
    join           Tell a running agent to join the cluster
    keygen         Generates a new encryption key
    keyring        Manages gossip layer encryption keys
    kv             Interact with the key-value store
    leave          Gracefully leaves the cluster and shuts down
    maint          Controls node or service maintenance mode
    members        Lists the members of a cluster
    operator       Provides cluster-level tools for operators
    registrator    Registers Docker containers as services (gliderlabs/registrator)
    rtt            Estimates network round trip times between nodes
    services       Interact with services
    template       Renders templates from Consul data (consul-template)
    version        Prints the concord version
    watch          Watch for changes in Consul";

pub(crate) fn run_with(args: &[String], io: &mut Io<'_>) -> i32 {
    let Some((command, rest)) = args.split_first() else {
        return io.error(USAGE);
    };
    match command.as_str() {
        "agent" => run_agent(rest, io),
        "kv" => kv::run(rest, io),
        "event" => event::event(rest, io),
        "catalog" => catalog::catalog(rest, io),
        "services" => catalog::services_cmd(rest, io),
        "maint" => catalog::maint(rest, io),
        "info" => ops::info(rest, io),
        "leave" => ops::leave(rest, io),
        "members" => members::members(rest, io),
        "join" => members::join(rest, io),
        "force-leave" => members::force_leave(rest, io),
        "rtt" => rtt::rtt(rest, io),
        "keygen" => members::keygen(rest, io),
        "keyring" => members::keyring(rest, io),
        "operator" => ops::operator(rest, io),
        "template" => crate::template::run_cli(rest, io),
        "registrator" => crate::registrator::run_cli(rest, io),
        "watch" => watch::run(rest, io),
        "version" | "-v" | "-version" | "--version" => ops::version(rest, io),
        "-h" | "-help" | "--help" | "help" => {
            io.info(USAGE);
            0
        }
        other => io.error(format!("Unknown command: {other:?} (run 'concord -help' for the list)")),
    }
}

fn run_agent(args: &[String], io: &mut Io<'_>) -> i32 {
    let config = match crate::config::parse_agent_args(args) {
        Ok(config) => config,
        Err(crate::config::ConfigError::Help(usage)) => {
            io.info(usage);
            return 0;
        }
        Err(e) => return io.error(format!("==> {e}")),
    };
    match crate::agent::run(config) {
        Ok(()) => 0,
        Err(e) => io.error(format!("==> Error starting agent: {e}")),
    }
}

/// Parse `args` into `fs`. On `-help` prints the usage (exit 0), on a bad flag prints Go's message and
/// the usage (exit 1); either way returns `Err(exit code)`.
pub(crate) fn parse_flags(fs: &mut FlagSet, args: &[String], help: &str, io: &mut Io<'_>) -> Result<(), i32> {
    match fs.parse(args) {
        Ok(()) => Ok(()),
        Err(FlagError::Help) => {
            io.info(format!("{}\n{}", help.trim(), fs.usage()));
            Err(0)
        }
        Err(FlagError::Bad(msg)) => {
            // One line, with where to look next (Go's flag package would dump the whole usage here).
            let _ = writeln!(io.err, "{msg} (run with -help for usage)");
            Err(1)
        }
    }
}

/// A subcommand group (`kv`, `operator raft`) called without a valid subcommand.
pub(crate) fn group_usage(io: &mut Io<'_>, args: &[String], usage: &str) -> i32 {
    match args.first().map(String::as_str) {
        Some("-h" | "-help" | "--help") => {
            io.info(usage);
            0
        }
        Some(other) => io.error(format!("Unknown subcommand: {other:?} (run with -help for the list)")),
        None => io.error(usage),
    }
}
