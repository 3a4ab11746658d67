//! What a node serves to others. A consumer that fetched an app should not become a silent
//! provider of it (bandwidth, and it would reveal what it runs): by default a node serves only
//! the blobs it published itself and the ones it chose to mirror (§4.3).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use iroh::EndpointId;
use iroh_blobs::{
    provider::events::{
        AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage,
        RequestMode, RequestUpdate, ThrottleMode,
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

/// A set of hashes shared with the request filter: those this node published (added
/// locally), and those it serves while still fetching them (partial mirrors).
#[derive(Debug, Default)]
pub(crate) struct OwnSet(RwLock<HashSet<Hash>>);

impl OwnSet {
    pub(crate) fn insert(&self, h: Hash) {
        self.0.write().expect("own set lock").insert(h);
    }

    pub(crate) fn remove(&self, h: &Hash) -> bool {
        self.0.write().expect("own set lock").remove(h)
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

    /// The children indexed under `root`, in no particular order.
    pub(crate) fn children_of(&self, root: &Hash) -> Vec<Hash> {
        let map = self.0.read().expect("seq index lock");
        map.iter()
            .filter(|(_, roots)| roots.contains(root))
            .map(|(c, _)| *c)
            .collect()
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

/// Upload limits: how much a node gives away (PROTOCOL §5.2). Shared by the origin and mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadLimits {
    /// Requests served at once; past it a request is refused busy (QUIC code 2, iroh-blobs'
    /// `ERR_LIMIT`). At least 1: a free slot is never refused. `None` (the default, as
    /// iroh-blobs serves): no limit.
    pub max_uploads: Option<usize>,
    /// Bytes per second the node sends, all requests together (a home uplink); `None`: no cap.
    pub rate: Option<u64>,
}

/// The slots of [`UploadLimits::max_uploads`]: taken when a request is accepted, given back
/// when its update stream closes (the request ended, however it ended). Also who observes
/// which blob here now: the fetchers that know this node as a (partial) mirror.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    busy: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicU64,
    /// The endpoint behind each open connection, by iroh-blobs' connection id.
    conns: Mutex<HashMap<u64, EndpointId>>,
    /// Open observe requests, by blob and requester.
    observing: Mutex<HashMap<(Hash, EndpointId), usize>>,
}

impl Slots {
    /// Takes a slot unless all `max` are in use.
    fn try_take(&self, max: Option<usize>) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(max) = max else {
            self.busy.fetch_add(1, SeqCst);
            return true;
        };
        let max = max.max(1);
        let ok = self
            .busy
            .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
            .is_ok();
        if !ok {
            self.refused.fetch_add(1, SeqCst);
        }
        ok
    }

    fn give_back(&self) {
        self.busy.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// An observe request for `hash` arrived on connection `conn`; it counts until `updates`
    /// closes (the request ended).
    fn observed(
        self: &Arc<Self>,
        conn: u64,
        hash: Hash,
        updates: irpc::channel::mpsc::Receiver<RequestUpdate>,
    ) {
        let Some(id) = self.conns.lock().unwrap().get(&conn).copied() else {
            return;
        };
        *self
            .observing
            .lock()
            .unwrap()
            .entry((hash, id))
            .or_default() += 1;
        let slots = self.clone();
        when_ended(updates, move || {
            let mut observing = slots.observing.lock().unwrap();
            if let Some(n) = observing.get_mut(&(hash, id)) {
                *n -= 1;
                if *n == 0 {
                    observing.remove(&(hash, id));
                }
            }
        });
    }

    /// Whether endpoint `id` observes `hash` here now.
    pub(crate) fn observes(&self, hash: Hash, id: &EndpointId) -> bool {
        self.observing.lock().unwrap().contains_key(&(hash, *id))
    }

    /// (requests being served now, requests refused busy so far).
    pub(crate) fn snapshot(&self) -> (usize, u64) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.busy.load(SeqCst), self.refused.load(SeqCst))
    }
}

/// Runs `then` once a request has ended: the provider holds the request's update sender until
/// then, so its receiver closes (however the request ended).
fn when_ended(
    mut updates: irpc::channel::mpsc::Receiver<RequestUpdate>,
    then: impl FnOnce() + Send + 'static,
) {
    tokio::spawn(async move {
        while let Ok(Some(_)) = updates.recv().await {}
        then();
    });
}

/// A token bucket for the node's upload rate: each chunk group sent books its bytes at the
/// rate, and the sender waits for whatever is booked beyond one second of burst.
#[derive(Debug)]
struct Pacer {
    rate: u64,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// How long to hold a send of `bytes` now (virtual scheduling: the bucket's booked time
    /// moves on by each send's cost; a send waits for whatever is booked beyond the burst).
    fn book(&self, bytes: u64) -> std::time::Duration {
        let now = tokio::time::Instant::now();
        let burst = std::time::Duration::from_secs(1);
        let cost = std::time::Duration::from_secs_f64(bytes as f64 / self.rate.max(1) as f64);
        let mut next = self.next.lock().expect("pacer lock");
        *next = (*next).max(now) + cost;
        next.saturating_duration_since(now + burst)
    }
}

/// Builds the provider's event sender. Every get, get-many and observe request is checked
/// against the serve policy (`Everything` allows all; a partial mirror is served as a mirror,
/// and iroh-blobs sends only verified chunk groups, resetting with code 3 at the first one it
/// lacks): a collection request is allowed by its
/// root (its members were shared with it); a child of a HashSeq is allowed by its own hash
/// when one of its roots is. An allowed get then needs a free upload slot, or is refused busy;
/// with an upload rate, every chunk group waits for its share of it.
pub(crate) fn request_filter(
    policy: ServePolicy,
    limits: UploadLimits,
    slots: Arc<Slots>,
    own: Arc<OwnSet>,
    partial: Arc<OwnSet>,
    mirrors: Arc<MirrorSet>,
    seqs: Arc<SeqIndex>,
) -> EventSender {
    // Installed whatever the policy: who observes what (a fetcher's crowd, `Slots::observes`)
    // needs every observe request and connection.
    // The slots need the end of each request: the provider holds the request's update sender
    // until the request ends, in `Intercept` mode too (unused there), so its receiver closes
    // then; the `Log` modes would add an event per chunk group that nothing here needs.
    let mask = EventMask {
        connected: ConnectMode::Notify,
        get: RequestMode::Intercept,
        get_many: RequestMode::Intercept,
        observe: ObserveMode::Intercept,
        throttle: if limits.rate.is_some() {
            ThrottleMode::Intercept
        } else {
            ThrottleMode::None
        },
        ..EventMask::DEFAULT
    };
    let (tx, mut rx) = EventSender::channel(64, mask);
    let everything = policy == ServePolicy::Everything;
    let served = move |h: &Hash| {
        everything || own.contains(h) || partial.contains(h) || mirrors.contains(&h.to_hex())
    };
    let allowed = move |h: &Hash| served(h) || seqs.roots_of(h).iter().any(&served);
    let pacer = limits.rate.map(|rate| Pacer {
        rate,
        next: std::sync::Mutex::new(tokio::time::Instant::now()),
    });
    tokio::spawn(async move {
        let verdict = |ok: bool, h: &Hash| {
            if ok {
                Ok(())
            } else {
                debug!(hash = %h, "refusing request for a blob we neither published nor mirror");
                Err(AbortReason::Permission)
            }
        };
        // A permitted request takes a slot, held until its updates end.
        let admit = |res: Result<(), AbortReason>,
                     updates: irpc::channel::mpsc::Receiver<RequestUpdate>| {
            res?;
            if !slots.try_take(limits.max_uploads) {
                debug!(
                    max_uploads = ?limits.max_uploads,
                    "every upload slot is in use: answering busy"
                );
                return Err(AbortReason::RateLimited);
            }
            let slots = slots.clone();
            when_ended(updates, move || slots.give_back());
            Ok(())
        };
        while let Some(msg) = rx.recv().await {
            match msg {
                ProviderMessage::GetRequestReceived(msg) => {
                    let h = msg.request.hash;
                    let res = admit(verdict(allowed(&h), &h), msg.rx);
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::GetManyRequestReceived(msg) => {
                    let bad = msg.request.hashes.iter().find(|h| !allowed(h)).copied();
                    let res = match bad {
                        Some(h) => verdict(false, &h),
                        None => Ok(()),
                    };
                    let res = admit(res, msg.rx);
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::ObserveRequestReceived(msg) => {
                    let h = msg.request.hash;
                    let res = verdict(allowed(&h), &h);
                    if res.is_ok() {
                        slots.observed(msg.connection_id, h, msg.rx);
                    }
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::ClientConnectedNotify(msg) => {
                    if let Some(id) = msg.endpoint_id {
                        slots.conns.lock().unwrap().insert(msg.connection_id, id);
                    }
                }
                ProviderMessage::ConnectionClosed(msg) => {
                    slots.conns.lock().unwrap().remove(&msg.connection_id);
                }
                ProviderMessage::Throttle(msg) => {
                    let hold = pacer.as_ref().map(|p| p.book(msg.size)).unwrap_or_default();
                    if hold.is_zero() {
                        msg.tx.send(Ok(())).await.ok();
                    } else {
                        tokio::spawn(async move {
                            tokio::time::sleep(hold).await;
                            msg.tx.send(Ok(())).await.ok();
                        });
                    }
                }
                _ => {}
            }
        }
    });
    tx
}
