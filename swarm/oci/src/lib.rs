//! OCI images as Archy ships them (PROTOCOL §2.1 v2). Module map:
//!
//! - [`digest`]: `sha256:<hex>` digests, checked when parsed; streaming SHA-256.
//! - [`image`]: the image manifest and config as §2.1 reads them, and [`image::LayerPlan`], the
//!   checks a node makes on children 0 and 1 of a layered image before any layer is fetched
//!   (count, sizes, media types, foreign layers, the config digest, the platform). Every
//!   failure is an [`image::LayerError`] naming its check and its child.
//! - [`layout`]: an OCI image layout directory on disk (what `podman save --format oci-dir`
//!   writes) read into the parts a layered image is made of.
//! - [`registry`]: the pull-only OCI Distribution API a node serves on loopback — its request
//!   parsing (routes, digests, `Range`) and error codes, pure, so it is fuzzed.
//!
//! Invariants: nothing here trusts a name, only digests; nothing here does network I/O; the
//! bytes of a manifest or config are kept exactly as received (their digest is over them).
//! Deliberately absent: pushing, tags, image indexes (a node ships one platform).

pub mod digest;
pub mod image;
pub mod layout;
pub mod registry;

pub use digest::{Digest, Sha256Stream};
pub use image::{Descriptor, LayerError, LayerPlan, Platform};
