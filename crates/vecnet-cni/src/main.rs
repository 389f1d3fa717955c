//! `vecnet-cni`: the CNI plugin (spec 1.1.0). It reads the network configuration on stdin and the
//! `CNI_*` environment, relays the call to `vecnetd` over its control socket and prints the
//! result or a CNI error object. `VERSION` needs no daemon.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vecnet_agent::cni::{code, CniError, CniReply, CniRequest, CNI_VERSION, SUPPORTED_VERSIONS};
use vecnet_agent::control;

const DEFAULT_SOCKET: &str = "/run/vecnet/vecnetd.sock";

fn fail(e: CniError) -> ExitCode {
    println!("{}", serde_json::to_string(&e).unwrap_or_default());
    ExitCode::FAILURE
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn main() -> ExitCode {
    let command = env("CNI_COMMAND");
    if command == "VERSION" {
        println!(
            "{}",
            serde_json::json!({"cniVersion": CNI_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
        );
        return ExitCode::SUCCESS;
    }
    if !["ADD", "DEL", "CHECK", "STATUS", "GC"].contains(&command.as_str()) {
        return fail(CniError::new(
            code::INVALID_ENVIRONMENT,
            "CNI_COMMAND must be ADD, DEL, CHECK, VERSION, STATUS or GC",
            format!("got {command:?}"),
        ));
    }
    let mut stdin = String::new();
    if std::io::stdin().read_to_string(&mut stdin).is_err() {
        return fail(CniError::new(
            code::DECODE_FAILURE,
            "cannot read the network configuration on stdin",
            "",
        ));
    }
    let conf: serde_json::Value = match serde_json::from_str(&stdin) {
        Ok(v) => v,
        Err(e) => {
            return fail(CniError::new(
                code::DECODE_FAILURE,
                "cannot decode the network configuration",
                e.to_string(),
            ))
        }
    };
    let version = conf
        .get("cniVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if !SUPPORTED_VERSIONS.contains(&version) {
        return fail(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion {version:?}; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    if conf
        .get("name")
        .and_then(|v| v.as_str())
        .is_none_or(str::is_empty)
    {
        return fail(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            "network configuration has no name",
            "",
        ));
    }
    let socket = PathBuf::from(
        conf.get("socket")
            .and_then(|v| v.as_str())
            .unwrap_or(DEFAULT_SOCKET),
    );
    let (container_id, netns, ifname) =
        (env("CNI_CONTAINERID"), env("CNI_NETNS"), env("CNI_IFNAME"));
    let missing: Vec<&str> = match command.as_str() {
        "ADD" | "CHECK" => [
            ("CNI_CONTAINERID", &container_id),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", &ifname),
        ]
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(n, _)| *n)
        .collect(),
        "DEL" => [("CNI_CONTAINERID", &container_id), ("CNI_IFNAME", &ifname)]
            .iter()
            .filter(|(_, v)| v.is_empty())
            .map(|(n, _)| *n)
            .collect(),
        _ => Vec::new(),
    };
    if !missing.is_empty() {
        return fail(CniError::new(
            code::INVALID_ENVIRONMENT,
            "missing CNI environment variables",
            missing.join(", "),
        ));
    }
    let args: BTreeMap<String, String> = env("CNI_ARGS")
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let valid_attachments = conf
        .get("cni.dev/valid-attachments")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    Some((
                        x.get("containerID")?.as_str()?.to_string(),
                        x.get("ifname")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let req = CniRequest {
        command: command.clone(),
        cni_version: version.to_string(),
        container_id,
        netns,
        ifname,
        args,
        valid_attachments,
    };
    let body = serde_json::to_string(&req).unwrap_or_default();
    let reply = match control::call(&socket, "POST", "/v1/cni", &body, Duration::from_secs(60)) {
        Ok((200, b)) => serde_json::from_str::<CniReply>(&b).map_err(|e| e.to_string()),
        Ok((status, b)) => Err(format!("vecnetd answered {status}: {}", b.trim())),
        Err(e) => {
            let c = if command == "STATUS" {
                code::PLUGIN_NOT_AVAILABLE
            } else {
                code::TRY_AGAIN_LATER
            };
            return fail(CniError::new(c, "vecnetd is not available", e.to_string()));
        }
    };
    match reply {
        Ok(CniReply::Ok(Some(mut result))) => {
            result.cni_version = version.to_string();
            println!("{}", serde_json::to_string(&result).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(CniReply::Ok(None)) => ExitCode::SUCCESS,
        Ok(CniReply::Error(e)) => fail(e),
        Err(e) => fail(CniError::new(
            code::TRY_AGAIN_LATER,
            "unexpected answer from vecnetd",
            e,
        )),
    }
}
