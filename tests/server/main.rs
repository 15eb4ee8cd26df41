//! Integration tests: the real binary, over its real TLS on a loopback port, driven by the
//! kubectl binary, kube-rs, client-go, the Python client and plain HTTPS requests, with a real
//! OCI registry and a stand-in kube-apiserver where a test needs them.

mod auth;
mod cascading;
mod client_go;
mod common;
mod console;
mod errors;
mod fidelity;
mod hardening;
mod install;
mod kube_apiserver;
mod kube_rs;
mod kubectl;
mod lists_and_watches;
mod load;
mod oci;
mod operator;
mod pki;
#[path = "../../storage/tests/postgres/mod.rs"]
mod postgres;
mod python;
mod replicas;
mod schemathesis;
mod verification;
