//! archy-orchestrator: makes a machine's Podman match the apps the user wants, rootless and
//! without ever losing app data. It knows nothing of Nostr, DIDs or iroh: the node converts a
//! verified manifest into an [`AppSpec`] and hands it over, and an image arrives as an archive
//! file the node took out of its blob store ([`Images::load_checked`]).
//!
//! Module map (pure logic apart from I/O, in the sans-IO style):
//! - [`names`] — the injective names (`archy_<app>_<part>`) and owner labels of every Podman
//!   object, and the legacy names the migration reads (pure).
//! - [`audit`] — every Podman object of the node with its owner; orphans flagged.
//! - [`spec`] — [`AppSpec`], [`Intent`], [`Policy`]; defensive validation and the spec hash
//!   that labels each container (pure).
//! - [`plan`](mod@plan) — the planner: (desired, observed, back-off, now) → ordered [`Action`]s (pure,
//!   unit-tested without Podman).
//! - [`backoff`] — the error policy (kube's `error_policy`): what a failure, a user's start,
//!   a stable container or a purge does to an app's crash-loop [`Backoff`], when the loop
//!   wakes, what an outcome does to the last error and the dependents (pure).
//! - [`store`] — desired state (current + previous spec, intent) in redb, committed before
//!   anything acts on it.
//! - [`podman`] — the Podman CLI: [`PodmanCmd`] (optionally `runuser` to another user),
//!   `ps` parsing, the locked-down `podman run` arguments. The node builds one and shares it
//!   between the reconciler and its image exports and imports.
//! - [`image`] — images to and from archive files over the small [`Images`] trait (which
//!   [`PodmanCmd`] implements): `podman save`, and the checked `podman load` that refuses an
//!   image whose id is not the expected one and keeps none of the names the archive carried.
//! - [`secrets`] — generated secrets: 0600 files, created once, delivered as Podman secrets.
//! - [`health`] — http / tcp / exec health checks with retries.
//! - [`quadlet`] — [`render_units`]: the equivalent systemd Quadlet units (a `.container`, or a
//!   stack's `.network` and one `.container` per service).
//! - [`report`] — what the reconciler reports ([`AppStatus`], [`Outcome`] with its typed
//!   [`ActionKind`], [`ReconcileReport`], [`InstallOutcome`], [`MigrationReport`]): pure data,
//!   serialised as the CLI's `--json` output.
//! - `runtime` — the Podman verbs (run, start, stop, remove containers; volumes, secrets,
//!   images, health) for one owner, apart from the store and the decisions (crate-private).
//! - `apply` — applying one planned [`Action`] through the runtime: health check, rollback of a
//!   failed update, back-off (crate-private; unit-tested with a scripted runtime).
//! - `migrate` — the naming migration of apps installed before the injective names, under a
//!   journal, never guessing at a shared volume (crate-private).
//! - [`reconciler`] — [`Reconciler`]: observe → plan → apply, the loop, and the functions the
//!   CLI calls (install, start, stop, restart, uninstall, logs, list, reconcile_once).
//!
//! A stack (PROTOCOL §2.2: several services) is one app: planned, adopted, updated and rolled
//! back as a whole, its services started in `depends_on` order on the app's own network.
//!
//! Invariants: an intent is committed before it is acted on; a container matching its spec
//! hash is adopted, never recreated; a stopped app is never started by the loop; volumes and
//! secrets are removed only by a purge; a failed update rolls back to the previous spec; an
//! app's data belongs to (publisher, app): no object is mounted or reused unless its labels
//! say so, and another publisher's app of the same name is refused.

use std::path::{Path, PathBuf};

mod apply;
pub mod audit;
pub mod backoff;
pub mod health;
pub mod image;
mod migrate;
pub mod names;
pub mod plan;
pub mod podman;
pub mod quadlet;
pub mod reconciler;
pub mod report;
mod runtime;
pub mod secrets;
pub mod spec;
pub mod store;

pub use audit::{AuditEntry, AuditReport, AuditStatus};
pub use image::{normalize_id, own_image_name, ArchiveFormat, Images};
pub use plan::{plan, Action, Backoff, BackoffPolicy, CreateReason, DesiredApp};
pub use podman::{ContainerState, ObservedContainer, PodmanCmd, PodmanOutput};
pub use quadlet::{render_quadlet, render_units, Unit};
pub use reconciler::{Config, Reconciler};
pub use report::{
    ActionKind, AppState, AppStatus, HeldApp, InstallOutcome, MigrationReport, Outcome,
    OutcomeStatus, ReconcileReport, ServiceStatus,
};
pub use spec::{
    AppSpec, HealthCheck, HealthKind, Intent, Policy, PortSpec, Protocol, Resources, SecretKind,
    SecretSpec, ServiceSpec, VolumeSpec,
};
pub use store::{AppRecord, Naming, RolledBack};

/// Everything the orchestrator can refuse or fail at, with a message the user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec breaks a rule; nothing reached Podman.
    #[error("app spec rejected: `{field}`: {reason}")]
    Policy { field: String, reason: String },
    #[error("unknown app `{0}`: it is not installed")]
    UnknownApp(String),
    /// Other installed apps depend on this one (PROTOCOL §2.2 `dependencies`).
    #[error("`{app}` is a dependency of {}: uninstall {} first", by.join(", "), if by.len() == 1 { "it" } else { "them" })]
    Needed { app: String, by: Vec<String> },
    #[error("image `{image}` is not in Podman{}: load it before installing or updating",
        expected.as_ref().map(|e| format!(" with id {e}")).unwrap_or_default())]
    ImageMissing {
        image: String,
        expected: Option<String>,
    },
    #[error("{command} failed: {message}")]
    Podman { command: String, message: String },
    /// A loaded archive is not the image it was signed as ([`image::Images::load_checked`]).
    #[error("image refused: archive loaded as {actual} but the manifest's image.id is {expected}; the loaded image was removed")]
    ImageIdMismatch { expected: String, actual: String },
    #[error("invalid image id `{input}`: expected sha256:<64 hex>")]
    InvalidImageId { input: String },
    /// An object or record belongs to another (publisher, app) than the one asking for it.
    #[error("{0}")]
    Owner(String),
    #[error("state database: {0}")]
    Store(#[from] redb::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
