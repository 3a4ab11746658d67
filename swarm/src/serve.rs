//! What a node serves to others. A consumer that fetched an app should not become a silent
//! provider of it (bandwidth, and it would reveal what it runs): by default a node serves only
//! the blobs it published itself and the ones it chose to mirror (§4.3).

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use iroh_blobs::{
    provider::events::{
        AbortReason, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode,
    },
    Hash,
};
use tracing::debug;

use crate::mirror::MirrorSet;

/// Which blobs the node answers requests for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServePolicy {
    /// Blobs (and collections) this node added itself, plus those in its mirror set.
    #[default]
    OwnAndMirrored,
    /// Everything in the store, like `sendme send` (for `archy blob serve`).
    Everything,
}

/// Hashes this node published (added locally); shared with the request filter.
#[derive(Debug, Default)]
pub(crate) struct OwnSet(RwLock<HashSet<Hash>>);

impl OwnSet {
    pub(crate) fn insert(&self, h: Hash) {
        self.0.write().expect("own set lock").insert(h);
    }

    pub(crate) fn contains(&self, h: &Hash) -> bool {
        self.0.read().expect("own set lock").contains(h)
    }
}

/// The children of the HashSeq roots in the store (child → its roots), so a child is served
/// by its own hash wherever one of its roots is (a layer shared by two images is found under
/// either, PROTOCOL §4.3 v2).
#[derive(Debug, Default)]
pub(crate) struct SeqIndex(RwLock<std::collections::HashMap<Hash, Vec<Hash>>>);

impl SeqIndex {
    pub(crate) fn insert(&self, root: Hash, children: impl IntoIterator<Item = Hash>) {
        let mut map = self.0.write().expect("seq index lock");
        for c in children {
            let roots = map.entry(c).or_default();
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
    }

    pub(crate) fn remove_root(&self, root: &Hash) {
        let mut map = self.0.write().expect("seq index lock");
        map.retain(|_, roots| {
            roots.retain(|r| r != root);
            !roots.is_empty()
        });
    }

    pub(crate) fn roots_of(&self, child: &Hash) -> Vec<Hash> {
        self.0
            .read()
            .expect("seq index lock")
            .get(child)
            .cloned()
            .unwrap_or_default()
    }
}

/// Builds the provider's event sender: `None` serves everything; otherwise every get,
/// get-many and observe request is checked against the own and mirror sets. A collection
/// request is allowed by its root (its members were shared with it); a child of a HashSeq is
/// allowed by its own hash when one of its roots is.
pub(crate) fn request_filter(
    policy: ServePolicy,
    own: Arc<OwnSet>,
    mirrors: Arc<MirrorSet>,
    seqs: Arc<SeqIndex>,
) -> Option<EventSender> {
    if policy == ServePolicy::Everything {
        return None;
    }
    let mask = EventMask {
        get: RequestMode::Intercept,
        get_many: RequestMode::Intercept,
        observe: ObserveMode::Intercept,
        ..EventMask::DEFAULT
    };
    let (tx, mut rx) = EventSender::channel(64, mask);
    let served = move |h: &Hash| own.contains(h) || mirrors.contains(&h.to_hex());
    let allowed = move |h: &Hash| served(h) || seqs.roots_of(h).iter().any(&served);
    tokio::spawn(async move {
        let verdict = |ok: bool, h: &Hash| {
            if !ok {
                debug!(hash = %h, "refusing request for a blob we neither published nor mirror");
            }
            if ok {
                Ok(())
            } else {
                Err(AbortReason::Permission)
            }
        };
        while let Some(msg) = rx.recv().await {
            match msg {
                ProviderMessage::GetRequestReceived(msg) => {
                    let h = msg.request.hash;
                    msg.tx.send(verdict(allowed(&h), &h)).await.ok();
                }
                ProviderMessage::GetManyRequestReceived(msg) => {
                    let bad = msg.request.hashes.iter().find(|h| !allowed(h)).copied();
                    let res = match bad {
                        Some(h) => verdict(false, &h),
                        None => Ok(()),
                    };
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::ObserveRequestReceived(msg) => {
                    let h = msg.request.hash;
                    msg.tx.send(verdict(allowed(&h), &h)).await.ok();
                }
                _ => {}
            }
        }
    });
    Some(tx)
}
