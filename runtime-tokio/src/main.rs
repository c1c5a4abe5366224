//! `concord`: the agent and the Consul-compatible CLI in one binary.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(concord::cli::run(&args));
}
