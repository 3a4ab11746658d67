//! The set of blobs this node mirrors, persisted so the node can re-announce them (§4.3) after
//! a restart. The announcement itself is the node's job; this is only the bookkeeping.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::{addr::parse_hash, Swarm, SwarmError};
use iroh_blobs::Hash;

#[derive(Debug)]
pub(crate) struct MirrorSet {
    path: PathBuf,
    hashes: Mutex<BTreeSet<String>>,
}

impl MirrorSet {
    pub(crate) fn load(path: PathBuf) -> Result<Self, SwarmError> {
        let hashes = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<String> =
                    serde_json::from_slice(&bytes).map_err(|e| SwarmError::MirrorList {
                        path: path.clone(),
                        reason: format!("not a JSON list of hashes ({e})"),
                    })?;
                let mut set = BTreeSet::new();
                for h in list {
                    parse_hash(&h).map_err(|e| SwarmError::MirrorList {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                    set.insert(h.to_ascii_lowercase());
                }
                set
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(SwarmError::io("reading mirror list", &path, e)),
        };
        Ok(MirrorSet {
            path,
            hashes: Mutex::new(hashes),
        })
    }

    pub(crate) fn contains(&self, hex: &str) -> bool {
        self.hashes.lock().expect("mirror set lock").contains(hex)
    }

    fn snapshot(&self) -> BTreeSet<String> {
        self.hashes.lock().expect("mirror set lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut BTreeSet<String>) -> bool) -> Result<bool, SwarmError> {
        let mut guard = self.hashes.lock().expect("mirror set lock");
        let mut next = guard.clone();
        if !f(&mut next) {
            return Ok(false);
        }
        save(&self.path, &next)?;
        *guard = next;
        Ok(true)
    }
}

/// Write-then-rename so a crash never leaves a half-written list.
fn save(path: &Path, set: &BTreeSet<String>) -> Result<(), SwarmError> {
    let list: Vec<&String> = set.iter().collect();
    let json = serde_json::to_vec_pretty(&list).expect("a list of strings serializes");
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| SwarmError::io("writing mirror list", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SwarmError::io("replacing mirror list", path, e))
}

impl Swarm {
    /// Marks a complete local blob as mirrored: served from now on (whatever the serve policy)
    /// and listed for re-announcement. Returns false if it
    /// already was. Refuses blobs that are not complete: a mirror must be able to serve all of it.
    pub async fn mirror_add(&self, hash: &str) -> Result<bool, SwarmError> {
        let h = parse_hash(hash)?;
        self.info(h).await?;
        let hex = h.to_hex();
        let added = self.mirrors.update(|s| s.insert(hex))?;
        // Served as a whole mirror from here on (no gap in between).
        self.partial.remove(&h);
        Ok(added)
    }

    /// Stops mirroring a blob (the data stays in the store). Returns false if it was not mirrored.
    pub fn mirror_remove(&self, hash: &str) -> Result<bool, SwarmError> {
        let hex = parse_hash(hash)?.to_hex();
        self.mirrors.update(|s| s.remove(&hex))
    }

    /// The mirrored blob hashes, sorted.
    pub fn mirrors(&self) -> Vec<String> {
        self.mirrors.snapshot().into_iter().collect()
    }

    /// Serves a blob this node is still fetching (a partial mirror, PROTOCOL §4.3 v2): its
    /// verified chunk groups from now on, and, for a layered image's HashSeq root, its
    /// `children` by their own hashes. Not persisted: after a restart only complete mirrors are
    /// served. Ends with [`Swarm::stop_partial`] (the fetch failed) or [`Swarm::mirror_add`].
    pub fn serve_partial(&self, hash: &str, children: &[Hash]) -> Result<(), SwarmError> {
        let h = parse_hash(hash)?;
        if !children.is_empty() {
            self.seqs.insert(h, children.iter().copied());
        }
        self.partial.insert(h);
        Ok(())
    }

    /// Stops serving a partial blob (its data stays). Returns false if it was not served so.
    pub fn stop_partial(&self, hash: &str) -> bool {
        parse_hash(hash).is_ok_and(|h| self.partial.remove(&h))
    }

    /// The parts this node serves under a layered image's root (the checked HashSeq roots it
    /// holds, and partial ones), for the `x` tags of its announcement; empty for other blobs.
    pub fn served_children(&self, root: &str) -> Vec<String> {
        let Ok(h) = parse_hash(root) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .seqs
            .children_of(&h)
            .iter()
            .map(|c| c.to_hex())
            .collect();
        out.sort();
        out
    }

    pub fn is_mirrored(&self, hash: &str) -> bool {
        parse_hash(hash)
            .map(|h| self.mirrors.contains(&h.to_hex()))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_loads_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirrors.json");
        let m = MirrorSet::load(path.clone()).unwrap();
        let a = blake3::hash(b"a").to_hex().to_string();
        assert!(m.update(|s| s.insert(a.clone())).unwrap());
        assert!(!m.update(|s| s.insert(a.clone())).unwrap());
        let again = MirrorSet::load(path.clone()).unwrap();
        assert_eq!(again.snapshot().into_iter().collect::<Vec<_>>(), vec![a]);
        std::fs::write(&path, b"[\"nothex\"]").unwrap();
        let err = MirrorSet::load(path).unwrap_err();
        assert!(err.to_string().contains("mirrors.json"), "{err}");
    }
}
