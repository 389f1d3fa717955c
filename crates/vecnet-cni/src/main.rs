//! `vecnet-cni`: the CNI plugin kubelet calls. It relays to `vecnetd` over its control socket,
//! which arrives with the node daemon; until then only `VERSION` (which needs no daemon) works and
//! every other verb answers with CNI error 11 ("try again later").

use std::process::ExitCode;

const SUPPORTED: &str = r#"["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#;

fn main() -> ExitCode {
    let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
    match cmd.as_str() {
        "VERSION" => {
            println!(r#"{{"cniVersion":"1.1.0","supportedVersions":{SUPPORTED}}}"#);
            ExitCode::SUCCESS
        }
        "" => {
            println!(
                r#"{{"cniVersion":"1.1.0","code":4,"msg":"CNI_COMMAND is not set","details":"vecnet-cni is run by the container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION|STATUS|GC"}}"#
            );
            ExitCode::FAILURE
        }
        other => {
            let verb: String = other
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            println!(
                r#"{{"cniVersion":"1.1.0","code":11,"msg":"vecnetd is not available","details":"{verb}: this build has no vecnetd control socket yet"}}"#
            );
            ExitCode::FAILURE
        }
    }
}
