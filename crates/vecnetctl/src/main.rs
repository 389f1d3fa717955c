//! `vecnetctl`: the operator CLI. It talks to `vecnetd` over its control socket, which arrives
//! with the node daemon (`vecnetd run`); until then the same commands run inside
//! `vecnetd simulate` (see docs/cli.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("vecnetctl {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "vecnetctl: no vecnetd control socket in this build yet (the node daemon, `vecnetd run`, is not implemented); \
                 the VPP-style commands are available offline through `vecnetd simulate` (docs/cli.md)"
            );
            ExitCode::from(2)
        }
    }
}
