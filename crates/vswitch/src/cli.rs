//! The VPP-style command line that `vecnetctl` and `simulate` use.

use std::net::Ipv4Addr;

use crate::dataplane::Dataplane;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("unknown command: {input:?}{}", hint.as_ref().map(|h| format!(" (did you mean {h:?}?)")).unwrap_or_default())]
    Unknown { input: String, hint: Option<String> },
    #[error("{0}")]
    Usage(String),
}

/// Every command, for help and for the nearest-match hint.
pub const COMMANDS: &[&str] = &[
    "show trace [max <n>]",
    "trace add <input-node> <count>",
    "clear trace",
    "show runtime",
    "clear runtime",
    "show errors",
    "clear errors",
    "show interface",
    "show interface address",
    "show ip fib [table <n>] [<prefix>]",
    "show ip arp",
    "show nat44 sessions [detail]",
    "show nat44 static mappings",
    "show nat44 interfaces",
    "show nat44 addresses",
    "show acl-plugin acl",
    "show acl-plugin sessions",
    "show acl-plugin interface",
    "clear acl-plugin sessions",
    "clear nat44 sessions",
    "show version",
];

impl Dataplane {
    /// Runs one CLI command and returns its output.
    pub fn exec(&mut self, line: &str) -> Result<String, CliError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["show", "trace"] => Ok(self.show_trace(50)),
            ["show", "trace", "max", n] => Ok(self.show_trace(parse_num(n, "max")? as usize)),
            ["trace", "add", node, count] => {
                let count = parse_num(count, "count")?;
                self.trace_add(node, count).map(|_| String::new())
            }
            ["clear", "trace"] => {
                self.trace.clear();
                Ok(String::new())
            }
            ["show", "runtime"] | ["sh", "run"] => Ok(self.graph.show_runtime(0, self.uptime())),
            ["clear", "runtime"] => {
                self.graph.clear_runtime();
                Ok(String::new())
            }
            ["clear", "errors"] => {
                self.graph.clear_errors();
                Ok(String::new())
            }
            ["show", "errors"] | ["show", "error"] => Ok(self.graph.show_errors()),
            ["show", "interface"] | ["show", "int"] => Ok(self.show_interface()),
            ["show", "interface", "address"] | ["show", "int", "addr"] => {
                Ok(self.show_interface_address())
            }
            ["show", "ip", "fib", rest @ ..] => {
                let (mut table, mut prefix) = (None, None);
                let mut it = rest.iter();
                while let Some(w) = it.next() {
                    if *w == "table" {
                        let n = it
                            .next()
                            .ok_or_else(|| CliError::Usage("table needs a number".into()))?;
                        table = Some(parse_num(n, "table")?);
                    } else {
                        prefix = Some(parse_prefix(w)?);
                    }
                }
                Ok(self.show_ip_fib(table, prefix))
            }
            ["show", "ip", "arp"] => Ok(self.show_ip_arp()),
            ["show", "nat44", rest @ ..] => {
                let w = &self.worker;
                vecnet_nat::show::show(rest, &w.snap.l3, &w.snap.nat, &w.nat).ok_or_else(|| {
                    CliError::Usage(format!(
                        "show nat44: unknown {:?} (sessions [detail], static mappings, interfaces, addresses)",
                        rest.join(" ")
                    ))
                })
            }
            ["clear", "acl-plugin", "sessions"] => {
                self.worker.acl.clear_sessions();
                Ok(String::new())
            }
            ["clear", "nat44", "sessions"] => {
                self.worker.nat.sessions.purge(|_| true);
                Ok(String::new())
            }
            ["show", "acl-plugin", rest @ ..] => {
                let w = &self.worker;
                vecnet_acl::show::show(rest, &w.snap.l3, &w.snap.acl, &w.acl).ok_or_else(|| {
                    CliError::Usage(format!(
                        "show acl-plugin: unknown {:?} (acl, sessions, interface)",
                        rest.join(" ")
                    ))
                })
            }
            ["show", "version"] => Ok(format!(
                "vecnet v{} (VPP 18.01 trace format)\n",
                env!("CARGO_PKG_VERSION")
            )),
            [] => Ok(String::new()),
            _ => Err(CliError::Unknown {
                input: line.trim().to_string(),
                hint: nearest(line),
            }),
        }
    }

    pub fn show_trace(&self, max: usize) -> String {
        self.graph.show_trace(0, &self.trace, self.snapshot(), max)
    }

    /// `trace add <node> <count>`: only input nodes accept it.
    pub fn trace_add(&mut self, node: &str, count: u32) -> Result<(), CliError> {
        let idx = self
            .graph
            .node_index(node)
            .filter(|&i| i == self.nodes.virtio_input)
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "trace add: {node:?} is not an input node (try virtio-input)"
                ))
            })?;
        self.trace.add_quota(idx, count);
        Ok(())
    }
}

fn parse_num(s: &str, what: &str) -> Result<u32, CliError> {
    s.parse()
        .map_err(|_| CliError::Usage(format!("{what}: {s:?} is not a number")))
}

/// `a.b.c.d/len` (exact entry) or `a.b.c.d` (longest match).
fn parse_prefix(s: &str) -> Result<(Ipv4Addr, u8, bool), CliError> {
    let exact = s.contains('/');
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let a: Ipv4Addr = a
        .parse()
        .map_err(|_| CliError::Usage(format!("{s:?} is not an IPv4 prefix")))?;
    let l: u8 = l
        .parse()
        .ok()
        .filter(|&l| l <= 32)
        .ok_or_else(|| CliError::Usage(format!("{s:?}: bad prefix length")))?;
    Ok((a, l, exact))
}

/// The command with the smallest edit distance to `input`, if reasonably close.
pub fn nearest(input: &str) -> Option<String> {
    let input = input.trim();
    COMMANDS
        .iter()
        .map(|c| {
            // Compare against the literal words of the command only.
            let lit: Vec<&str> = c
                .split_whitespace()
                .take_while(|w| !w.starts_with('[') && !w.starts_with('<'))
                .collect();
            let lit = lit.join(" ");
            (levenshtein(input, &lit), lit)
        })
        .min_by_key(|(d, _)| *d)
        .filter(|(d, lit)| *d <= lit.len() / 2 + 2)
        .map(|(_, lit)| lit)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
