//! Garbage collection, the swarm's half. iroh-blobs runs its GC on a timer: every blob that no
//! tag names (a HashSeq tag names its children too) and that is not protected goes. This
//! module gives the node what it needs to decide: the tags ([`Swarm::tags`]), a way to drop
//! one ([`Swarm::untag`]), the operator's pins, and a protected set for fetches in flight, so
//! GC never races a transfer. Nothing here decides what is live: that is one pure function of
//! the node's (`marketplace/src/node/gc.rs`).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use iroh_blobs::{
    store::{GcConfig, ProtectOutcome},
    BlobFormat, Hash,
};
use serde::{Deserialize, Serialize};

use crate::{
    addr::parse_hash,
    node::{FETCHED_TAG, OWN_TAG, SEQ_TAG},
    Swarm, SwarmError,
};

/// How often iroh-blobs' GC sweeps untagged blobs. Short, so a node's GC pass sees its effect
/// soon; a sweep of a store of a few thousand blobs costs milliseconds.
pub const GC_INTERVAL: Duration = Duration::from_secs(5);

/// Hashes in use right now (counted: two fetches of one blob protect it until both end), and
/// how many GC runs started (iroh-blobs asks for the protected set at the start of each).
#[derive(Debug, Default)]
pub(crate) struct ProtectSet(Mutex<HashMap<Hash, usize>>, std::sync::atomic::AtomicU64);

/// Protection of one hash, released when dropped.
#[derive(Debug)]
pub struct Protected {
    set: Arc<ProtectSet>,
    hash: Hash,
}

impl Drop for Protected {
    fn drop(&mut self) {
        let mut map = self.set.0.lock().expect("protect set lock");
        if let Some(n) = map.get_mut(&self.hash) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.hash);
            }
        }
    }
}

pub(crate) fn config(set: Arc<ProtectSet>) -> GcConfig {
    GcConfig {
        interval: GC_INTERVAL,
        add_protected: Some(Arc::new(move |live: &mut HashSet<Hash>| {
            live.extend(set.0.lock().expect("protect set lock").keys().copied());
            set.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { ProtectOutcome::Continue })
        })),
    }
}

/// Why a tag exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TagKind {
    /// Added here (published, or `archy blob add`): served, and kept while this node is its
    /// origin.
    Own,
    /// Fetched (complete or, while a fetch is in flight or was interrupted, partial).
    Fetched,
    /// A tag of another tool (`sendme` interop, say).
    Other,
}

/// One tag of the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TagEntry {
    pub name: String,
    pub hash: String,
    /// The tag keeps a HashSeq root and its children.
    pub hash_seq: bool,
    pub kind: TagKind,
}

impl Swarm {
    /// Protects `hash` from GC until the guard is dropped (a fetch in flight).
    pub fn protect(&self, hash: Hash) -> Protected {
        *self
            .protected
            .0
            .lock()
            .expect("protect set lock")
            .entry(hash)
            .or_default() += 1;
        Protected {
            set: self.protected.clone(),
            hash,
        }
    }

    /// Waits until a whole GC sweep ran after this call (so every blob untagged before it is
    /// gone), at most four sweep intervals. Returns whether it saw one.
    pub async fn wait_for_sweep(&self) -> bool {
        use std::sync::atomic::Ordering;
        let start = self.protected.1.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + 4 * GC_INTERVAL;
        // Run start+1 began after this call; it has finished once run start+2 begins.
        while self.protected.1.load(Ordering::SeqCst) < start + 2 {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Hashes protected right now.
    pub fn in_flight(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .protected
            .0
            .lock()
            .expect("protect set lock")
            .keys()
            .map(|h| h.to_hex())
            .collect();
        v.sort();
        v
    }

    /// Every tag of the store, sorted by name.
    pub async fn tags(&self) -> Result<Vec<TagEntry>, SwarmError> {
        list_tags(&self.store).await
    }

    /// Drops a tag (the blob goes at the next sweep unless another tag or a protection keeps
    /// it). Durable when it returns.
    pub async fn untag(&self, tag: &TagEntry) -> Result<(), SwarmError> {
        let h = parse_hash(&tag.hash)?;
        self.store
            .tags()
            .delete(tag.name.as_bytes())
            .await
            .map_err(|e| SwarmError::store("dropping a tag", e))?;
        if tag.hash_seq
            && !self
                .tags()
                .await?
                .iter()
                .any(|t| t.hash == tag.hash && t.hash_seq)
        {
            self.seqs.remove_root(&h);
        }
        self.commit().await
    }

    /// The operator's pins (kept whatever else holds), persisted beside the mirror list.
    pub fn pins(&self) -> Result<BTreeSet<String>, SwarmError> {
        read_pins(&self.pins_path())
    }

    /// Pins or unpins a blob; returns whether that changed anything.
    pub fn set_pin(&self, hash: &str, pinned: bool) -> Result<bool, SwarmError> {
        let hex = parse_hash(hash)?.to_hex();
        let path = self.pins_path();
        let mut pins = read_pins(&path)?;
        let changed = if pinned {
            pins.insert(hex)
        } else {
            pins.remove(&hex)
        };
        if changed {
            let json = serde_json::to_vec_pretty(&pins).expect("a set of strings");
            let tmp = path.with_extension("json.tmp");
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&json)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| SwarmError::io("writing the pin list", &path, e))?;
        }
        Ok(changed)
    }

    fn pins_path(&self) -> PathBuf {
        self.dir.join("pins.json")
    }
}

/// Every tag of `store`, sorted by name (also used at open, before there is a [`Swarm`]).
pub(crate) async fn list_tags(
    store: &iroh_blobs::store::fs::FsStore,
) -> Result<Vec<TagEntry>, SwarmError> {
    let mut tags = store
        .tags()
        .list()
        .await
        .map_err(|e| SwarmError::store("listing tags", e))?;
    let mut out = Vec::new();
    while let Some(tag) = tags.next().await {
        let tag = tag.map_err(|e| SwarmError::store("listing tags", e))?;
        let name = String::from_utf8_lossy(&tag.name.0).into_owned();
        let kind = if name.starts_with(OWN_TAG) {
            TagKind::Own
        } else if name.starts_with(FETCHED_TAG) || name.starts_with(SEQ_TAG) {
            TagKind::Fetched
        } else {
            TagKind::Other
        };
        out.push(TagEntry {
            name,
            hash: tag.hash.to_hex(),
            hash_seq: tag.format == BlobFormat::HashSeq,
            kind,
        });
    }
    out.sort();
    Ok(out)
}

fn read_pins(path: &std::path::Path) -> Result<BTreeSet<String>, SwarmError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SwarmError::MirrorList {
            path: path.to_owned(),
            reason: format!("not a JSON list of hashes ({e})"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(SwarmError::io("reading the pin list", path, e)),
    }
}
