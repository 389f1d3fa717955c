//! Test doubles for vecnet's integration tests. Dev-dependency only: nothing here is hardened
//! for production use.

pub mod fake_apiserver;
