//! `vecnetctl`: VPP-style commands for a running `vecnetd`, over its control socket.
//!
//! ```text
//! vecnetctl [--socket PATH] show trace | trace add virtio-input 10 | show nat44 sessions | …
//! vecnetctl pods | ipam | nodes | events | stats | metrics | resync
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vecnet_agent::control;

const DEFAULT_SOCKET: &str = "/run/vecnet/vecnetd.sock";

fn usage() -> &'static str {
    concat!(
        "usage: vecnetctl [--socket PATH] COMMAND...\n",
        "\n",
        "VPP-style commands (answered by vecnetd's data plane):\n",
        "  show trace [max N] | trace add virtio-input N | clear trace\n",
        "  show interface [address] | show ip fib [table N] [PREFIX] | show ip arp\n",
        "  show runtime | clear runtime | show errors | clear errors | show version\n",
        "  show nat44 sessions [detail] | static mappings | interfaces | addresses\n",
        "  show acl-plugin acl | sessions | interface\n",
        "  clear nat44 sessions | clear acl-plugin sessions\n",
        "contiv-netctl style:\n",
        "  pods   the pods attached on this node\n",
        "  ipam   this node's addressing and allocated pod IPs\n",
        "  nodes  the nodes of the cluster with their IDs and addresses\n",
        "  events warnings about objects that cannot be rendered, and what is wrong now\n",
        "  stats  network programming latency (p50/p90/p99) over recent changes\n",
        "  metrics  the Prometheus metrics (as served on httpListen /metrics)\n",
        "  resync   read the whole state again and apply what differs\n",
        "\n",
        "The socket defaults to /run/vecnet/vecnetd.sock (or $VECNET_SOCKET).\n",
    )
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut socket =
        PathBuf::from(std::env::var("VECNET_SOCKET").unwrap_or_else(|_| DEFAULT_SOCKET.into()));
    if args.first().map(String::as_str) == Some("--socket") {
        if args.len() < 2 {
            eprintln!("vecnetctl: --socket needs a path\n\n{}", usage());
            return ExitCode::from(2);
        }
        socket = PathBuf::from(args.remove(1));
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        None | Some("-h") | Some("--help") | Some("help") => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some("--version") | Some("-V") => {
            println!("vecnetctl {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let line = args.join(" ");
    let (method, path, body) = match line.as_str() {
        "pods" => ("GET", "/v1/pods", String::new()),
        "ipam" => ("GET", "/v1/ipam", String::new()),
        "nodes" => ("GET", "/v1/nodes", String::new()),
        "events" => ("GET", "/v1/events", String::new()),
        "stats" => ("GET", "/v1/stats", String::new()),
        "metrics" => ("GET", "/metrics", String::new()),
        "resync" => ("POST", "/v1/resync", String::new()),
        _ => ("POST", "/v1/cli", line.clone()),
    };
    match control::call(&socket, method, path, &body, Duration::from_secs(30)) {
        Ok((200, out)) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Ok((_, err)) => {
            eprint!("vecnetctl: {err}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vecnetctl: {e} (is vecnetd running? --socket or VECNET_SOCKET selects another socket)");
            ExitCode::from(2)
        }
    }
}
