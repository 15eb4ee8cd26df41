//! Integration tests: the real binary, over its real TLS on a loopback port, driven by the
//! kubectl binary, kube-rs and plain HTTPS requests.

mod auth;
mod client_go;
mod common;
mod errors;
mod fidelity;
mod kube_apiserver;
mod kube_rs;
mod kubectl;
mod lists_and_watches;
mod pki;
mod python;
