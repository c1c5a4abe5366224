//! `concord`: the agent and the Consul-compatible CLI in one binary.

/// mimalloc rather than glibc's malloc: see the dependency's note in Cargo.toml.
#[cfg(feature = "server")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "server")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(concord::cli::run(&args));
}

/// Without `server` (as runtime-sim builds the library) there is no agent or CLI to run.
#[cfg(not(feature = "server"))]
fn main() {
    eprintln!("concord was built without the `server` feature; rebuild with default features");
    std::process::exit(2);
}
