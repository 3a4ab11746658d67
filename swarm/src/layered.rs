//! HashSeqs of parts: what a layered image (PROTOCOL §2.1) is to the swarm. A root is the
//! concatenation of its children's 32-byte hashes; tagging the root as a HashSeq keeps its
//! children (iroh-blobs' GC follows HashSeq tags), and the [`SeqIndex`] lets the request
//! filter serve a child by its own hash wherever one of its roots is served.

use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use iroh_blobs::{
    api::{blobs::AddPathOptions, proto::ExportRangesItem, proto::ImportMode, TempTag},
    hashseq::HashSeq,
    store::fs::FsStore,
    BlobFormat, Hash, HashAndFormat,
};
use serde::{Deserialize, Serialize};

use crate::{
    addr::parse_hash,
    node::{OWN_TAG, SEQ_TAG},
    serve::SeqIndex,
    BlobInfo, Swarm, SwarmError,
};

/// One part of a HashSeq to add.
#[derive(Debug, Clone)]
pub enum Part {
    Bytes(Vec<u8>),
    /// A file. `reference`: keep the data where it is instead of copying it into the store —
    /// only for a file the node owns, that nobody else can change and that stays in place
    /// (the store trusts it unchanged).
    File {
        path: PathBuf,
        reference: bool,
    },
}

/// A HashSeq in the store: the root (its size is 32 × children) and each child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashSeqInfo {
    pub root: BlobInfo,
    pub children: Vec<BlobInfo>,
}

impl HashSeqInfo {
    /// The sum of the children's sizes (a layered image's `image.layers.size`).
    pub fn content_size(&self) -> u64 {
        self.children.iter().map(|c| c.size).sum()
    }
}

/// Fills the index from every HashSeq-tagged root in the store (at open).
pub(crate) async fn index_hashseqs(store: &FsStore, seqs: &SeqIndex) -> Result<(), SwarmError> {
    let roots: Vec<Hash> = crate::gc::list_tags(store)
        .await?
        .iter()
        .filter(|t| t.hash_seq)
        .filter_map(|t| parse_hash(&t.hash).ok())
        .collect();
    for root in roots {
        if let Ok(bytes) = store.blobs().get_bytes(root).await {
            if let Ok(seq) = HashSeq::try_from(bytes) {
                seqs.insert(root, seq.iter());
            }
        }
    }
    Ok(())
}

impl Swarm {
    async fn add_part(&self, part: Part) -> Result<TempTag, SwarmError> {
        let blobs = self.store.blobs();
        let tag = match part {
            Part::Bytes(b) => blobs.add_bytes(b).temp_tag().await,
            Part::File { path, reference } => {
                let path = std::path::absolute(&path)
                    .map_err(|e| SwarmError::io("resolving", &path, e))?;
                let mode = if reference {
                    ImportMode::TryReference
                } else {
                    ImportMode::Copy
                };
                blobs
                    .add_path_with_opts(AddPathOptions {
                        path,
                        mode,
                        format: BlobFormat::Raw,
                    })
                    .temp_tag()
                    .await
            }
        };
        tag.map_err(|e| SwarmError::store("adding a part", e))
    }

    /// Adds `parts` (in order, at most two at once) and their HashSeq root, published by this
    /// node: the root is tagged as ours (served, kept with its children). Durable when it
    /// returns.
    pub async fn add_hashseq(&self, parts: Vec<Part>) -> Result<HashSeqInfo, SwarmError> {
        let tags: Vec<TempTag> = futures::stream::iter(parts.into_iter().map(|p| self.add_part(p)))
            .buffered(2)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let hashes: Vec<Hash> = tags.iter().map(|t| t.hash()).collect();
        let seq: HashSeq = hashes.iter().copied().collect();
        let root = self
            .store
            .blobs()
            .add_bytes(seq.into_inner())
            .temp_tag()
            .await
            .map_err(|e| SwarmError::store("adding a HashSeq root", e))?;
        let root_hash = root.hash();
        self.keep_own(HashAndFormat::hash_seq(root_hash)).await?;
        for h in &hashes {
            self.own.insert(*h);
        }
        self.seqs.insert(root_hash, hashes.iter().copied());
        drop(tags);
        self.hashseq(&root_hash.to_hex()).await
    }

    /// The root and children of a HashSeq whose root is complete here (children may not be).
    pub async fn hashseq(&self, root: &str) -> Result<HashSeqInfo, SwarmError> {
        let children = self.hashseq_children(root).await?;
        let mut infos = Vec::with_capacity(children.len());
        for c in &children {
            let size = match self.status(*c).await? {
                iroh_blobs::api::proto::BlobStatus::Complete { size } => size,
                iroh_blobs::api::proto::BlobStatus::Partial { size } => size.unwrap_or(0),
                iroh_blobs::api::proto::BlobStatus::NotFound => 0,
            };
            infos.push(BlobInfo {
                hash: c.to_hex(),
                size,
            });
        }
        Ok(HashSeqInfo {
            root: self.blob_info(root).await?,
            children: infos,
        })
    }

    /// The children of a complete HashSeq root, in order.
    pub async fn hashseq_children(&self, root: &str) -> Result<Vec<Hash>, SwarmError> {
        let h = parse_hash(root)?;
        self.info(h).await?;
        let bytes = self
            .store
            .blobs()
            .get_bytes(h)
            .await
            .map_err(|e| SwarmError::store("reading a HashSeq root", e))?;
        let seq = HashSeq::try_from(bytes).map_err(|e| SwarmError::NotHashSeq {
            hash: h.to_hex(),
            reason: e.to_string(),
        })?;
        Ok(seq.iter().collect())
    }

    /// Keeps a fetched HashSeq whose root and children are all complete and whose parts the
    /// caller checked: the root is tagged as a HashSeq in its own namespace (so its children
    /// are kept with it, and the registry may serve it). The children's own fetch tags stay;
    /// the node's GC pass drops them when nothing needs them. Durable when it returns.
    pub async fn keep_fetched_hashseq(&self, root: &str) -> Result<(), SwarmError> {
        let h = parse_hash(root)?;
        let children = self.hashseq_children(root).await?;
        for c in &children {
            self.info(*c).await?;
        }
        self.store
            .tags()
            .set(
                format!("{SEQ_TAG}{}", h.to_hex()),
                HashAndFormat::hash_seq(h),
            )
            .await
            .map_err(|e| SwarmError::store("tagging a HashSeq", e))?;
        self.seqs.insert(h, children.iter().copied());
        self.commit().await
    }

    /// The checked HashSeq roots: those this node made (`own`) and those it fetched and kept
    /// with [`Swarm::keep_fetched_hashseq`] — not other HashSeqs (a `sendme` collection), whose
    /// parts nobody checked. Sorted, with whether each is ours.
    pub async fn hashseq_roots(&self) -> Result<Vec<(String, bool)>, SwarmError> {
        let mut out: Vec<(String, bool)> = self
            .tags()
            .await?
            .into_iter()
            .filter(|t| t.hash_seq && (t.name.starts_with(OWN_TAG) || t.name.starts_with(SEQ_TAG)))
            .map(|t| (t.hash, t.name.starts_with(OWN_TAG)))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// A read handle on the store that can be moved into a server task.
    pub fn reader(&self) -> StoreReader {
        StoreReader(self.store.clone())
    }
}

/// A cloneable read handle on the store, for servers that outlive a borrow of the [`Swarm`]
/// (the node's OCI registry).
#[derive(Debug, Clone)]
pub struct StoreReader(FsStore);

impl StoreReader {
    /// Bytes `start..end` of a complete blob, in pieces as the store hands them out.
    pub fn read_range(
        &self,
        hash: Hash,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = Result<Bytes, SwarmError>> + Send + 'static {
        self.0
            .blobs()
            .export_ranges(hash, start..end)
            .stream()
            .filter_map(|item| async move {
                match item {
                    ExportRangesItem::Size(_) => None,
                    ExportRangesItem::Data(leaf) => Some(Ok(leaf.data)),
                    ExportRangesItem::Error(e) => Some(Err(SwarmError::store("reading a blob", e))),
                }
            })
    }

    /// The size of a complete blob, `None` if it is not complete here.
    pub async fn complete_size(&self, hash: Hash) -> Option<u64> {
        match self.0.blobs().status(hash).await {
            Ok(iroh_blobs::api::proto::BlobStatus::Complete { size }) => Some(size),
            _ => None,
        }
    }
}
