//! Shared support for the end-to-end tests in `tests/tests/`: forged and honest events, the
//! real `archy` binary (one-shot commands and running nodes), relays, iroh and Podman on loopback.

pub mod cli;
pub mod forge;
