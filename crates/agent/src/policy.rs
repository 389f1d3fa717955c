//! NetworkPolicy renderer: NetworkPolicy + Pod + Namespace → ACL tables (SYSTEM.md section 7).
