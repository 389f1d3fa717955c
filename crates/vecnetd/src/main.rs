//! `vecnetd`: the vecnet node daemon (data plane + agent).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bench_etcd;
mod config;
mod daemon;
mod demo;
mod metrics;
mod pods;
mod reflect;
mod simulate;

#[derive(Parser)]
#[command(
    name = "vecnetd",
    version,
    about = "vecnet node daemon: vector data plane and Kubernetes agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Push the frames of a scenario through the data plane offline; print tx frames, drops and
    /// the packet trace as one JSON object.
    Simulate(simulate::Args),
    /// Measure the routed path on one core with a packet generator (not a test).
    Bench(bench::Args),
    /// Run the node daemon: data plane on TAPs, agent, control socket.
    Run(daemon::Args),
    /// The seed's flow for real, in namespaces of its own (root): curl from a pod to a Service
    /// whose endpoint is in the host network stack, with the trace.
    Demo(demo::Args),
    /// The reflector (KSR role): keep the objects of a manifests directory or of the Kubernetes
    /// API in etcd, with mark-and-sweep at start (docs/etcd.md, docs/kubernetes.md).
    Reflect(reflect::Args),
    /// Leave the cluster: release this node's ID in etcd and delete its nodeinfo.
    Leave(daemon::LeaveArgs),
}

/// Structured logs on stderr, level from `RUST_LOG` (default `info`).
pub(crate) fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Simulate(a) => simulate::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Run(a) => daemon::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Reflect(a) => reflect::run(a),
        Command::Leave(a) => daemon::leave(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vecnetd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
