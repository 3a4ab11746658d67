//! Shared support for the end-to-end tests in `tests/tests/`: forged and honest events, and
//! starting real relays, iroh nodes and Podman-backed reconcilers on loopback.

pub mod forge;
