//! [`Swarm`]: one iroh endpoint + one persistent iroh-blobs store + a router serving it.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::StreamExt;

use iroh::{
    endpoint::{presets, RelayMode},
    protocol::Router,
    Endpoint, SecretKey,
};
use iroh_blobs::{api::proto::BlobStatus, store::fs::FsStore, BlobsProtocol, Hash};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{
    addr::parse_hash,
    mirror::MirrorSet,
    serve::{request_filter, OwnSet, SeqIndex, ServePolicy, Slots, UploadLimits},
    PeerAddr, SwarmError,
};

/// Where the endpoint lives on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// No relays, no discovery: peers dial the direct addresses in a [`PeerAddr`]. For tests and
    /// offline/LAN use. `bind` may use port 0 for a free port.
    Local { bind: SocketAddr },
    /// iroh's defaults (n0 relays + DNS discovery), for real deployments.
    Internet,
}

#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The node's swarm home: secret key, blob store and mirror list live here.
    pub dir: PathBuf,
    pub network: Network,
    /// Which blobs others may fetch from us.
    pub serve: ServePolicy,
    /// How much we upload at once (PROTOCOL §5.2); unlimited by default.
    pub uploads: UploadLimits,
}

impl SwarmConfig {
    /// Offline / LAN / tests: no relays, dial by direct address. Serves own + mirrored blobs.
    pub fn local(dir: impl Into<PathBuf>, bind: SocketAddr) -> Self {
        SwarmConfig {
            dir: dir.into(),
            network: Network::Local { bind },
            serve: ServePolicy::default(),
            uploads: UploadLimits::default(),
        }
    }

    /// Real deployments: iroh's relays and discovery. Serves own + mirrored blobs.
    pub fn internet(dir: impl Into<PathBuf>) -> Self {
        SwarmConfig {
            dir: dir.into(),
            network: Network::Internet,
            serve: ServePolicy::default(),
            uploads: UploadLimits::default(),
        }
    }

    pub fn with_serve(mut self, serve: ServePolicy) -> Self {
        self.serve = serve;
        self
    }

    pub fn with_uploads(mut self, uploads: UploadLimits) -> Self {
        self.uploads = uploads;
        self
    }
}

/// A blob in the store: its BLAKE3 hash (64 hex) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobInfo {
    pub hash: String,
    pub size: u64,
}

/// A running swarm node. Share it behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Swarm {
    pub(crate) dir: PathBuf,
    pub(crate) endpoint: Endpoint,
    pub(crate) store: FsStore,
    router: Router,
    local: bool,
    pub(crate) mirrors: Arc<MirrorSet>,
    pub(crate) own: Arc<OwnSet>,
    /// Blobs served while still being fetched (partial mirrors), until the fetch ends.
    pub(crate) partial: Arc<OwnSet>,
    pub(crate) seqs: Arc<SeqIndex>,
    slots: Arc<Slots>,
    pub(crate) protected: Arc<crate::gc::ProtectSet>,
}

const KEY_FILE: &str = "iroh-secret.key";
/// Tags keep blobs out of garbage collection and remember why we hold them.
pub(crate) const OWN_TAG: &str = "archy/own/";
pub(crate) const FETCHED_TAG: &str = "archy/fetched/";
/// A fetched HashSeq root whose parts the node checked (a layered image): its own namespace, so
/// a raw fetch of the same hash never overwrites it (and so drops its children's protection).
pub(crate) const SEQ_TAG: &str = "archy/seq/";

impl Swarm {
    /// Opens (or creates) the node's identity and store in `config.dir` and starts serving the
    /// store over the iroh-blobs ALPN.
    pub async fn open(config: SwarmConfig) -> Result<Swarm, SwarmError> {
        let dir = config.dir;
        std::fs::create_dir_all(&dir).map_err(|e| SwarmError::io("creating swarm dir", &dir, e))?;
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        let (endpoint, local) = match config.network {
            Network::Local { bind } => {
                let builder = Endpoint::builder(presets::Minimal)
                    .relay_mode(RelayMode::Disabled)
                    .secret_key(key)
                    .bind_addr(bind)
                    .map_err(|e| SwarmError::Bind {
                        bind: bind.to_string(),
                        reason: e.to_string(),
                    })?;
                let ep = builder.bind().await.map_err(|e| SwarmError::Bind {
                    bind: bind.to_string(),
                    reason: e.to_string(),
                })?;
                (ep, true)
            }
            Network::Internet => {
                let ep = Endpoint::builder(presets::N0)
                    .secret_key(key)
                    .bind()
                    .await
                    .map_err(|e| SwarmError::Bind {
                        bind: "default".into(),
                        reason: e.to_string(),
                    })?;
                (ep, false)
            }
        };
        let store_dir = dir.join("blobs");
        let protected = Arc::new(crate::gc::ProtectSet::default());
        let mut options = iroh_blobs::store::fs::options::Options::new(&store_dir);
        options.gc = Some(crate::gc::config(protected.clone()));
        let store = FsStore::load_with_opts(store_dir.join("blobs.db"), options)
            .await
            .map_err(|e| SwarmError::store("opening the store", e))?;
        let own = Arc::new(OwnSet::default());
        let mut tags = store
            .tags()
            .list_prefix(OWN_TAG)
            .await
            .map_err(|e| SwarmError::store("listing own blobs", e))?;
        while let Some(tag) = tags.next().await {
            let tag = tag.map_err(|e| SwarmError::store("listing own blobs", e))?;
            own.insert(tag.hash);
        }
        let mirrors = Arc::new(MirrorSet::load(dir.join("mirrors.json"))?);
        let seqs = Arc::new(SeqIndex::default());
        crate::layered::index_hashseqs(&store, &seqs).await?;
        let slots = Arc::new(Slots::default());
        let partial = Arc::new(OwnSet::default());
        let events = request_filter(
            config.serve,
            config.uploads,
            slots.clone(),
            own.clone(),
            partial.clone(),
            mirrors.clone(),
            seqs.clone(),
        );
        let blobs = BlobsProtocol::new(&store, Some(events));
        let router = Router::builder(endpoint.clone())
            .accept(iroh_blobs::ALPN, blobs)
            .spawn();
        let swarm = Swarm {
            dir,
            endpoint,
            store,
            router,
            local,
            mirrors,
            own,
            partial,
            seqs,
            slots,
            protected,
        };
        info!(endpoint = %swarm.addr(), "swarm node up");
        Ok(swarm)
    }

    /// Our address as others should dial it. In local mode the bound sockets (when not a
    /// wildcard) plus the interface addresses iroh found; in internet mode iroh's view.
    pub fn addr(&self) -> PeerAddr {
        let mut p = PeerAddr::from_endpoint_addr(&self.endpoint.addr());
        if self.local {
            let bound: Vec<SocketAddr> = self
                .endpoint
                .bound_sockets()
                .into_iter()
                .filter(|a| !a.ip().is_unspecified())
                .collect();
            let mut addrs = bound;
            for a in p.addrs {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            p.addrs = addrs;
        }
        p
    }

    /// Whether endpoint `id` observes `hash` here now: it fetches the blob and has this node
    /// among its sources (PROTOCOL §5.3).
    pub fn observed_by(&self, hash: Hash, id: &str) -> bool {
        id.parse::<iroh::EndpointId>()
            .is_ok_and(|id| self.slots.observes(hash, &id))
    }

    /// Whether this node serves `hash` while it fetches it (a partial mirror, §4.3): other
    /// fetchers can then learn of it and observe it.
    pub fn serves_partial(&self, hash: &Hash) -> bool {
        self.partial.contains(hash)
            || (self.seqs.roots_of(hash).iter()).any(|root| self.partial.contains(root))
    }

    /// Uploads now: (requests being served, requests refused busy since the node started).
    pub fn uploads(&self) -> (usize, u64) {
        self.slots.snapshot()
    }

    /// The iroh endpoint id as 64 hex characters.
    pub fn endpoint_id(&self) -> String {
        self.endpoint.id().to_string()
    }

    /// The swarm home directory given at open.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new scratch directory under `<dir>/tmp`, removed when dropped: for a file on its way
    /// into the store ([`add_file`](Self::add_file)) or out of it ([`export`](Self::export)),
    /// on the store's file system.
    pub fn tmp_dir(&self) -> Result<tempfile::TempDir, SwarmError> {
        let base = self.dir.join("tmp");
        std::fs::create_dir_all(&base).map_err(|e| SwarmError::io("creating tmp dir", &base, e))?;
        tempfile::tempdir_in(&base).map_err(|e| SwarmError::io("creating tmp dir", &base, e))
    }

    /// Stops serving, closes the endpoint and flushes the store so the directory can be reopened.
    /// The swarm is unusable afterwards.
    pub async fn shutdown(&self) -> Result<(), SwarmError> {
        self.router
            .shutdown()
            .await
            .map_err(|e| SwarmError::store("stopping the router", e))?;
        // The router's blobs handler already shut the store down (flushed, db closed); a
        // second request only fails because the store is gone, so it is not sent.
        Ok(())
    }

    /// Imports a file into the store (tagged so it is kept) and returns its hash and size.
    pub async fn add_file(&self, path: &Path) -> Result<BlobInfo, SwarmError> {
        let abs = std::path::absolute(path).map_err(|e| SwarmError::io("resolving", path, e))?;
        if !abs.is_file() {
            return Err(SwarmError::io(
                "adding file",
                &abs,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a regular file"),
            ));
        }
        let tag = self
            .store
            .blobs()
            .add_path(&abs)
            .temp_tag()
            .await
            .map_err(|e| SwarmError::store("adding a file", e))?;
        self.keep_own(tag.hash_and_format()).await?;
        self.info(tag.hash()).await
    }

    /// Imports bytes into the store (tagged so it is kept) and returns its hash and size.
    pub async fn add_bytes(&self, data: impl Into<Vec<u8>>) -> Result<BlobInfo, SwarmError> {
        let data: Vec<u8> = data.into();
        let tag = self
            .store
            .blobs()
            .add_bytes(data)
            .temp_tag()
            .await
            .map_err(|e| SwarmError::store("adding bytes", e))?;
        self.keep_own(tag.hash_and_format()).await?;
        self.info(tag.hash()).await
    }

    /// Complete blobs in the store, sorted by hash.
    pub async fn list(&self) -> Result<Vec<BlobInfo>, SwarmError> {
        let hashes = self
            .store
            .blobs()
            .list()
            .hashes()
            .await
            .map_err(|e| SwarmError::store("listing blobs", e))?;
        let mut out = Vec::new();
        for h in hashes {
            if let BlobStatus::Complete { size } = self.status(h).await? {
                out.push(BlobInfo {
                    hash: h.to_hex(),
                    size,
                });
            }
        }
        out.sort_by(|a, b| a.hash.cmp(&b.hash));
        Ok(out)
    }

    /// True if the blob is complete locally (partial data does not count).
    pub async fn has(&self, hash: &str) -> Result<bool, SwarmError> {
        let h = parse_hash(hash)?;
        Ok(matches!(self.status(h).await?, BlobStatus::Complete { .. }))
    }

    /// Hash and size of a complete local blob.
    pub async fn blob_info(&self, hash: &str) -> Result<BlobInfo, SwarmError> {
        self.info(parse_hash(hash)?).await
    }

    /// Writes a complete blob to `path` (overwriting it).
    pub async fn export(&self, hash: &str, path: &Path) -> Result<u64, SwarmError> {
        let h = parse_hash(hash)?;
        let info = self.info(h).await?;
        let abs = std::path::absolute(path).map_err(|e| SwarmError::io("resolving", path, e))?;
        if let Some(parent) = abs.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| SwarmError::io("creating export dir", parent, e))?;
        }
        if abs.exists() {
            std::fs::remove_file(&abs).map_err(|e| SwarmError::io("replacing", &abs, e))?;
        }
        self.store
            .blobs()
            .export(h, &abs)
            .finish()
            .await
            .map_err(|e| SwarmError::store("exporting a blob", e))?;
        Ok(info.size)
    }

    /// Reads a whole complete blob into memory (for small blobs such as manifests).
    pub async fn read_bytes(&self, hash: &str) -> Result<Vec<u8>, SwarmError> {
        let h = parse_hash(hash)?;
        self.info(h).await?;
        let b = self
            .store
            .blobs()
            .get_bytes(h)
            .await
            .map_err(|e| SwarmError::store("reading a blob", e))?;
        Ok(b.to_vec())
    }

    /// Bytes of `hash` stored locally and verified (0 if absent). Used to show resume progress.
    pub async fn local_bytes(&self, hash: &str) -> Result<u64, SwarmError> {
        let h = parse_hash(hash)?;
        let local = self
            .store
            .remote()
            .local(iroh_blobs::HashAndFormat::raw(h))
            .await
            .map_err(|e| SwarmError::store("inspecting local data", e))?;
        Ok(local.local_bytes())
    }

    pub(crate) async fn status(&self, h: Hash) -> Result<BlobStatus, SwarmError> {
        self.store
            .blobs()
            .status(h)
            .await
            .map_err(|e| SwarmError::store("reading blob status", e))
    }

    pub(crate) async fn info(&self, h: Hash) -> Result<BlobInfo, SwarmError> {
        match self.status(h).await? {
            BlobStatus::Complete { size } => Ok(BlobInfo {
                hash: h.to_hex(),
                size,
            }),
            _ => Err(SwarmError::NotFound { hash: h.to_hex() }),
        }
    }

    /// Something we fetched: kept, but served only if mirrored. Durable when it returns.
    pub(crate) async fn keep_fetched(
        &self,
        content: iroh_blobs::HashAndFormat,
    ) -> Result<(), SwarmError> {
        self.store
            .tags()
            .set(format!("{FETCHED_TAG}{}", content.hash.to_hex()), content)
            .await
            .map_err(|e| SwarmError::store("tagging a blob", e))?;
        self.commit().await
    }

    /// Something we published: kept and served. Durable when it returns.
    pub(crate) async fn keep_own(
        &self,
        content: iroh_blobs::HashAndFormat,
    ) -> Result<(), SwarmError> {
        self.store
            .tags()
            .set(format!("{OWN_TAG}{}", content.hash.to_hex()), content)
            .await
            .map_err(|e| SwarmError::store("tagging a blob", e))?;
        self.own.insert(content.hash);
        self.commit().await
    }

    /// Waits until the store's database committed what was written so far. iroh-blobs batches
    /// its writes for up to 500 ms: without this, a blob reported added or fetched was gone
    /// after a SIGKILL (or a failed commit on a full disk) in that window.
    pub(crate) async fn commit(&self) -> Result<(), SwarmError> {
        self.store
            .sync_db()
            .await
            .map_err(|e| SwarmError::store("committing the blob store", e))
    }
}

/// The endpoint's secret key is the node's network identity: created once, 0600, reused.
fn load_or_create_key(path: &Path) -> Result<SecretKey, SwarmError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(m) = std::fs::metadata(path) {
                    if m.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(path = %path.display(), "secret key file is readable by others; chmod 600 it");
                    }
                }
            }
            let arr: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| SwarmError::CorruptKey {
                        path: path.to_path_buf(),
                        len: bytes.len(),
                    })?;
            Ok(SecretKey::from_bytes(&arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(path)
                .map_err(|e| SwarmError::io("creating secret key", path, e))?;
            f.write_all(&key.to_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| SwarmError::io("writing secret key", path, e))?;
            Ok(key)
        }
        Err(e) => Err(SwarmError::io("reading secret key", path, e)),
    }
}
