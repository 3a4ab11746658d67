//! archy-swarm: verified blobs over iroh, "the origin always wins".
//!
//! The swarm knows nothing of manifests, trust or containers: callers hand it the expected
//! hash and size (from a verified manifest) and an ordered source list (origin, then mirrors by
//! trust). A blob goes in from a file and comes out to one ([`Swarm::add_file`],
//! [`Swarm::export`]); the node turns an image into such a file and back with the
//! orchestrator's Podman client.
//!
//! Module map:
//! - [`node`]: [`Swarm`] — iroh endpoint (key persisted in the swarm dir), persistent
//!   iroh-blobs store, router serving it; add / list / export / has, and a scratch directory
//!   beside the store for files on their way in or out.
//! - [`addr`]: [`PeerAddr`] and its compact `<hex>@ip:port,...` form; hash parsing.
//! - [`select`]: the pure (sans-IO) source-selection state machine of PROTOCOL §5.
//! - [`spread`]: the pure rules for one blob from several sources at once (PROTOCOL §5.3):
//!   16 KiB-aligned pieces, who holds which, when a source leaves the spread.
//! - [`fetch`]: the fetch driver: spread the pieces over the origin and peers at once, then
//!   finish what is missing origin-first; verify, detect stalls and sources below the minimum
//!   rate, drop corrupt sources, report progress and per-source bytes.
//! - [`progress`]: a fetch's events folded into one [`Transfer`] value (bytes, rate, each
//!   source's share and state): what the CLI draws and the node's local API lists.
//! - [`layered`]: HashSeqs of parts (a layered image, PROTOCOL §2.1): add parts as one root,
//!   read a root's children, keep a fetched root (its children with it), read byte ranges.
//!   What the parts mean is the caller's business.
//! - [`gc`]: the store's tags as the node's GC pass sees them (what is kept and why is the
//!   node's decision), dropping tags, pins, and the in-flight set iroh-blobs' GC never touches.
//! - [`mirror`]: the persisted set of mirrored blob hashes, for re-announcement.
//! - [`serve`]: which blobs we answer requests for (own + mirrored by default), and the
//!   upload limits: slots past which a request is refused busy, and a node-wide upload rate.
//! - [`collection`]: iroh-blobs tickets and collections, for interop with `sendme`.

pub mod addr;
pub mod collection;
mod error;
pub mod fetch;
pub mod gc;
pub mod layered;
pub mod mirror;
pub mod node;
pub mod progress;
pub mod select;
pub mod serve;
pub mod spread;

pub use addr::{parse_hash, PeerAddr};
pub use collection::Ticket;
pub use error::SwarmError;
pub use fetch::{
    FetchEvent, FetchProgress, FetchReport, FetchRequest, ProgressSender, DEFAULT_MIN_RATE,
    DEFAULT_STALL_TIMEOUT,
};
pub use gc::{TagEntry, TagKind};
pub use iroh_blobs::Hash;
pub use layered::{HashSeqInfo, Part, StoreReader};
pub use node::{BlobInfo, Network, Swarm, SwarmConfig};
pub use progress::{SourceState, SourceTally, Transfer};
pub use select::SourceRole;
pub use serve::{ServePolicy, UploadLimits};
