//! Test doubles for vecnet's integration tests: a fake Kubernetes API server and a real etcd
//! started on loopback for one test. Dev-dependency only: nothing here is hardened
//! for production use.

pub mod etcd_server;
pub mod fake_apiserver;
