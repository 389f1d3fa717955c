//! ACL configuration as the policy renderer produces it (SYSTEM.md section 7): ordered rule
//! lists (first match wins; no match = deny) bound to interfaces per direction.

use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Deny,
    Permit,
    /// Permit and create a reflective session that lets the return traffic in.
    PermitReflect,
}

impl Action {
    /// VPP's action numbers in traces: 0 deny, 1 permit, 2 permit+reflect.
    pub fn code(self) -> u8 {
        match self {
            Action::Deny => 0,
            Action::Permit => 1,
            Action::PermitReflect => 2,
        }
    }
}

/// One rule, VPP `acl_rule_t` style. For ICMP the port ranges hold the type (source range) and
/// code (destination range), as VPP does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclRule {
    pub action: Action,
    pub src: (Ipv4Addr, u8),
    pub dst: (Ipv4Addr, u8),
    /// IP protocol; 0 = any (then ports are ignored).
    pub proto: u8,
    /// Inclusive ranges.
    pub src_ports: (u16, u16),
    pub dst_ports: (u16, u16),
    /// TCP flags (value, mask); (0, 0) = any.
    pub tcp_flags: (u8, u8),
}

impl AclRule {
    /// A rule matching everything, with `action`.
    pub fn any(action: Action) -> Self {
        Self {
            action,
            src: (Ipv4Addr::UNSPECIFIED, 0),
            dst: (Ipv4Addr::UNSPECIFIED, 0),
            proto: 0,
            src_ports: (0, 65535),
            dst_ports: (0, 65535),
            tcp_flags: (0, 0),
        }
    }
}

/// An ordered list of rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl {
    /// Who made it and why (`show acl-plugin acl` prints it), e.g. `local-table default/web`.
    pub tag: String,
    pub rules: Vec<AclRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclTimeouts {
    /// UDP and other non-TCP idle timeout, seconds.
    pub udp_idle: u32,
    pub tcp_idle: u32,
    pub tcp_transient: u32,
}

impl Default for AclTimeouts {
    fn default() -> Self {
        Self {
            udp_idle: 600,
            tcp_idle: 86_400,
            tcp_transient: 120,
        }
    }
}

/// ACLs bound to one interface, in order of evaluation, per direction (vswitch direction:
/// `input` = packets entering the data plane from the interface).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclBinding {
    pub sw_if_index: u32,
    pub input: Vec<u32>,
    pub output: Vec<u32>,
}

/// The ACL part of a data-plane snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclConfig {
    /// By ACL index.
    pub acls: Vec<Acl>,
    pub bindings: Vec<AclBinding>,
    pub timeouts: AclTimeouts,
    /// Session table size per worker.
    pub max_sessions: u32,
    pub reserved_for_control: u8,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self {
            acls: Vec::new(),
            bindings: Vec::new(),
            timeouts: AclTimeouts::default(),
            max_sessions: 1 << 20,
            reserved_for_control: 5,
        }
    }
}
