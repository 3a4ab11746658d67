//! Verified fetch (PROTOCOL §5): the I/O driver around [`crate::spread`] and
//! [`crate::select::Selector`].
//!
//! A blob of known size and more than one source is first *spread*: its 16 KiB-aligned pieces
//! are fetched from up to four sources at once, the origin among them, each source taking a
//! piece nobody is fetching (so the faster ones take more), its rarest; while other fetchers
//! of the blob are in the spread (partial mirrors) or the origin is much slower than the peers,
//! the origin is asked only for what no peer in the spread holds (what peers hold is read from an observe
//! request kept open for the whole fetch, so a partial mirror's growth counts at once).
//! Whatever the spread leaves missing
//! — every source in it ended, or a piece kept failing — is finished one source at a time,
//! origin first, by the selector's rules, so the origin alone can always complete a fetch.
//!
//! Each sequential attempt asks one source for the ranges still missing locally (iroh-blobs keeps verified
//! partial data, so an interrupted fetch resumes). iroh-blobs verifies every chunk group against
//! the BLAKE3 tree before it is written; a hash mismatch drops the source for this fetch and is
//! reported in [`FetchReport::bad_sources`] so the caller can record it against the peer's key.
//! A source that stalls or stays below [`FetchRequest::min_rate`] is left for the next one (the
//! rules are in [`crate::select`]); that is not evidence of malice and is only in
//! [`FetchReport::failures`].

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use futures::{stream::FuturesUnordered, FutureExt, StreamExt};
use iroh_blobs::{
    api::{
        proto::{Bitfield, BlobStatus},
        remote::GetProgressItem,
    },
    get::{fsm::DecodeError, GetError},
    protocol::{ChunkRanges, ChunkRangesExt, GetRequest, ObserveRequest},
    HashAndFormat,
};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    addr::parse_hash,
    error::short,
    select::{Action, Failure, Selector, SourceRole},
    spread::{self, Next, Pieces},
    PeerAddr, Swarm, SwarmError,
};

/// Default stall timeout: long enough for a slow link, short enough that a dead origin does
/// not block a user for long before mirrors are tried.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Default minimum rate, in verified bytes/s over each window of the stall timeout (see
/// [`FetchRequest::min_rate`]). 64 KiB/s (0.5 Mbit/s) is far below any link an image should
/// come over (a 100 MiB image at that rate takes 27 minutes), so an honest source on a slow
/// but working link passes, while a source that trickles (a chunk group every few seconds,
/// just often enough never to stall) is abandoned after one window. It is no risk for a client
/// whose own link is slower: when every source is below the floor, the fastest one is retried
/// without it (see [`crate::select`]).
pub const DEFAULT_MIN_RATE: u64 = 64 * 1024;

/// Each source gets at most this many attempts per fetch (a second chance covers a restart).
const MAX_ATTEMPTS: u32 = 2;

/// Sources that may join a fetch after it started ([`FetchRequest::more_peers`]).
pub const MAX_LATE_SOURCES: usize = 16;

/// How often a source with no piece to take looks again (the origin's and the peers' rates
/// change without waking it).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// How long the origin's first claim waits for the peers listed at the start to answer what
/// they hold (they answer in a round trip; one that does not is not waited for longer).
const FIRST_LOOK: Duration = Duration::from_secs(1);

/// A source's rate older than this counts as unknown (a yielding origin takes no pieces, so its
/// last sample would otherwise stand for the rest of the fetch).
const RATE_FRESH: Duration = Duration::from_secs(5);

/// What to fetch and from whom. `hash` and `size` come from a verified manifest, never a peer.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub hash: String,
    /// The expected size; the fetch fails unless the blob has exactly this size. `None` only
    /// for ad-hoc CLI gets without a manifest (the hash still verifies every byte).
    pub size: Option<u64>,
    /// An upper bound when the exact size is not known (`size` is `None`): a source announcing
    /// more is left, and a blob that turns out larger is refused ([`SwarmError::TooLarge`]).
    /// For the parts of a layered image the manifest bounds but does not size (§2.1).
    pub max_size: Option<u64>,
    /// The manifest's origin; tried first on every fetch.
    pub origin: Option<PeerAddr>,
    /// Mirrors, most trusted first. Every one is observed in a spread fetch, and they take
    /// turns for its peer requests; in the sequential phase they are used when the origin is
    /// unreachable, stalls or is too slow.
    pub peers: Vec<PeerAddr>,
    /// No verified progress for this long counts as a stall (also bounds connecting). Also the
    /// window over which [`FetchRequest::min_rate`] is measured.
    pub stall_timeout: Duration,
    /// Minimum verified throughput in bytes/s over each window of the stall timeout; a source
    /// below it is abandoned as too slow (not bad) and the fetch resumes from the next source.
    /// Sources found too slow are retried last, fastest first, without the floor, so a slow
    /// origin still delivers when nobody else can. 0 disables the rule. Default
    /// [`DEFAULT_MIN_RATE`].
    pub min_rate: u64,
    /// Pieces asked for at once (§5.3): the origin's request and `sources_at_once - 1` peer
    /// requests (all of them from peers when there is no origin); 1 fetches from one source at
    /// a time by the sequential rules alone. Default [`spread::MAX_SOURCES_AT_ONCE`].
    pub sources_at_once: usize,
    /// Mirrors found while the fetch runs (the caller watches the relays, PROTOCOL §5.3): the
    /// latest list each time. Sources new to this fetch join the spread while it has room or
    /// as others leave, and the sequential phase after it; at most [`MAX_LATE_SOURCES`]. With
    /// it, a blob is spread even when the origin is the only source at the start.
    pub more_peers: Option<watch::Receiver<Vec<PeerAddr>>>,
}

impl FetchRequest {
    pub fn new(hash: impl Into<String>, size: u64) -> Self {
        FetchRequest {
            size: Some(size),
            ..FetchRequest::hash_only(hash)
        }
    }

    /// A request without an expected size (see [`FetchRequest::size`]).
    pub fn hash_only(hash: impl Into<String>) -> Self {
        FetchRequest {
            hash: hash.into(),
            size: None,
            max_size: None,
            origin: None,
            peers: Vec::new(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
            sources_at_once: spread::MAX_SOURCES_AT_ONCE,
            more_peers: None,
        }
    }
}

/// Progress of a fetch, sent to the caller's channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchProgress {
    pub hash: String,
    /// The expected size, or the size the source announced when none was expected.
    pub size: Option<u64>,
    /// Verified bytes of this blob held locally now (includes data from earlier fetches).
    pub have: u64,
    /// Payload bytes received by this fetch so far, all sources together.
    pub transferred: u64,
    /// `transferred` divided by the time since the fetch started.
    pub rate_bytes_per_sec: f64,
    /// Endpoint id of the source this event is from (in a spread fetch several send at once).
    pub source: String,
    pub role: SourceRole,
    /// Payload bytes this event adds, all from `source` (the sum per source is its share; see
    /// [`crate::progress::Transfer`]).
    pub delta: u64,
}

/// Events a fetch reports while it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FetchEvent {
    /// Connecting to a source.
    Trying {
        source: String,
        role: SourceRole,
    },
    Progress(FetchProgress),
    /// The source answered busy (PROTOCOL §5.2): not a failure; it is asked again after
    /// `retry_in_ms`, other sources meanwhile.
    Busy {
        source: String,
        role: SourceRole,
        retry_in_ms: u64,
    },
    /// An attempt ended without the blob; `bad` means the source sent unverifiable bytes.
    SourceFailed {
        source: String,
        role: SourceRole,
        reason: String,
        bad: bool,
    },
}

/// The outcome of a fetch (also carried by [`SwarmError::Exhausted`] when it fails).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchReport {
    pub hash: String,
    /// The blob's size once complete (the expected size while it is not).
    pub size: u64,
    /// The blob was already complete locally; nothing was transferred.
    pub already_local: bool,
    /// Verified payload bytes received from each source (endpoint id), in source order.
    pub bytes_per_source: Vec<(String, u64)>,
    /// Sources dropped for sending bytes that do not verify: (endpoint id, reason).
    pub bad_sources: Vec<(String, String)>,
    /// Every failed attempt: (endpoint id, reason), in order.
    pub failures: Vec<(String, String)>,
    /// The source whose attempt completed the blob.
    pub completed_by: Option<String>,
}

impl FetchReport {
    /// Payload bytes this fetch moved over the network.
    pub fn transferred(&self) -> u64 {
        self.bytes_per_source.iter().map(|(_, b)| b).sum()
    }

    /// Bytes received from one endpoint id.
    pub fn bytes_from(&self, endpoint: &str) -> u64 {
        self.bytes_per_source
            .iter()
            .filter(|(id, _)| id == endpoint)
            .map(|(_, b)| b)
            .sum()
    }
}

/// A progress sink; `None` means the caller does not care. Sending awaits, so a slow consumer
/// slows the transfer instead of losing events (the CLI drains it quickly).
pub type ProgressSender = Option<mpsc::Sender<FetchEvent>>;

impl Swarm {
    /// Fetches a blob by the §5 rules and verifies it is complete with the expected size.
    pub async fn fetch(
        &self,
        req: FetchRequest,
        progress: ProgressSender,
    ) -> Result<FetchReport, SwarmError> {
        let h = parse_hash(&req.hash)?;
        let hex = h.to_hex();
        // Kept from the start: GC leaves a fetch in flight alone (protected), and a partial
        // blob (tagged) survives a restart so the fetch resumes; a GC pass of the node drops
        // the tag when nothing needs the blob.
        let _in_flight = self.protect(h);
        let mut report = FetchReport {
            hash: hex.clone(),
            size: req.size.unwrap_or(0),
            ..Default::default()
        };
        if let BlobStatus::Complete { size } = self.status(h).await? {
            check_size(&hex, req.size, size)?;
            check_max(&hex, req.max_size, size)?;
            report.size = size;
            report.already_local = true;
            self.keep_fetched(HashAndFormat::raw(h)).await?;
            return Ok(report);
        }

        self.keep_fetched(HashAndFormat::raw(h)).await?;
        let mut addrs = HashMap::new();
        for p in req.origin.iter().chain(req.peers.iter()) {
            addrs.insert(p.endpoint.clone(), p.to_endpoint_addr()?);
        }
        let addrs = Mutex::new(addrs);
        let me = self.endpoint_id();
        // Never dial ourselves: we would "serve" our own partial data.
        let origin = req
            .origin
            .as_ref()
            .map(|o| o.endpoint.clone())
            .filter(|id| *id != me);
        let peers: Vec<String> = req
            .peers
            .iter()
            .map(|p| p.endpoint.clone())
            .filter(|id| *id != me && Some(id) != origin.as_ref())
            .collect();
        let started = Instant::now();
        let transferred = AtomicU64::new(0);

        // Several sources at once first (§5.3); what that leaves missing, the origin-first
        // sequential fetch below finishes.
        let mut spread_tally = SpreadTally::default();
        let sources: Mutex<Vec<(String, SourceRole)>> = Mutex::new(
            origin
                .iter()
                .map(|o| (o.clone(), SourceRole::Origin))
                .chain(peers.iter().map(|p| (p.clone(), SourceRole::Peer)))
                .collect(),
        );
        // Sources that may still join count as a second one: the spread is what lets them in.
        let known = sources.lock().unwrap().len();
        let could = if req.more_peers.is_some() {
            known.max(2)
        } else {
            known
        };
        let at_once = could.min(req.sources_at_once);
        if let Some(size) = req
            .size
            .filter(|s| known > 0 && spread::worth_spreading(*s, at_once))
        {
            let ctx = SpreadCtx {
                hash: h,
                size,
                req: &req,
                sources: &sources,
                addrs: &addrs,
                started,
                have_before: self.local_bytes(&hex).await.unwrap_or(0),
                transferred: &transferred,
                progress: &progress,
            };
            spread_tally = self.spread(&ctx).await;
            if matches!(self.status(h).await?, BlobStatus::Complete { .. }) {
                report.bytes_per_source = spread_tally.bytes.clone();
                report.bad_sources = spread_tally.bad.clone();
                report.failures = spread_tally.failures.clone();
                report.completed_by = spread_tally.last_piece_from.clone();
                return self.finish(h, &req, report).await;
            }
            info!(hash = %hex, missing_from = ?spread_tally.stopped(), "the spread left pieces missing: finishing from one source at a time, origin first");
        }

        let dropped = |id: &String| spread_tally.bad.iter().any(|(b, _)| b == id);
        // Peers that joined during the spread are in the list too.
        let peers: Vec<String> = sources
            .into_inner()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, role)| *role == SourceRole::Peer)
            .map(|(id, _)| id)
            .collect();
        let addrs = addrs.into_inner().unwrap_or_default();
        let mut sel = Selector::new(
            origin.filter(|o| !dropped(o)),
            peers.into_iter().filter(|p| !dropped(p)),
            req.stall_timeout,
            MAX_ATTEMPTS,
        )
        .with_min_rate(req.min_rate);
        let mut transferred = transferred.into_inner();
        loop {
            let index = match sel.next_action(Instant::now().into_std()) {
                Action::Try { index } => index,
                Action::Wait { until } => {
                    tokio::time::sleep_until(Instant::from_std(until)).await;
                    continue;
                }
                Action::GiveUp => {
                    fill(&mut report, &sel, &spread_tally);
                    warn!(hash = %hex, failures = ?report.failures, "fetch failed: all sources exhausted");
                    return Err(SwarmError::Exhausted {
                        hash: hex,
                        report: Box::new(report),
                    });
                }
            };
            let id = sel.source_id(index).to_string();
            let role = sel.source_role(index);
            if sel.floor_lifted() {
                info!(hash = %hex, source = %short(&id), ?role, "every faster source failed: retrying a slow source without the rate floor");
            }
            emit_held(
                &mut sel,
                &progress,
                FetchEvent::Trying {
                    source: id.clone(),
                    role,
                },
            )
            .await;
            let ctx = Attempt {
                hash: h,
                id: &id,
                role,
                req: &req,
                started,
            };
            match self
                .attempt(&ctx, &addrs[&id], &mut sel, &mut transferred, &progress)
                .await
            {
                Ok(()) => {
                    sel.on_complete();
                    report.completed_by = Some(id.clone());
                    info!(hash = %hex, source = %short(&id), ?role, "fetch complete");
                    break;
                }
                Err(Failure::Busy) => {
                    let jitter = rand::random_range(0.5..=1.5);
                    let wait = sel.on_busy(std::time::Instant::now(), jitter);
                    info!(hash = %hex, source = %short(&id), ?role, retry_in_ms = wait.as_millis() as u64, "source is busy (every upload slot in use): backing off, other sources meanwhile");
                    emit(
                        &progress,
                        FetchEvent::Busy {
                            source: id,
                            role,
                            retry_in_ms: wait.as_millis() as u64,
                        },
                    )
                    .await;
                }
                Err(failure) => {
                    let bad = matches!(failure, Failure::Corrupt(_));
                    if bad {
                        warn!(hash = %hex, source = %short(&id), ?failure, "source sent bytes that do not verify; dropped for this fetch");
                    } else if matches!(failure, Failure::TooSlow { .. }) {
                        info!(hash = %hex, source = %short(&id), ?failure, "source below the minimum rate; trying the next one");
                    } else {
                        debug!(hash = %hex, source = %short(&id), ?failure, "source attempt failed");
                    }
                    sel.on_failure(failure);
                    let reason = sel
                        .failures()
                        .last()
                        .map(|f| f.1.clone())
                        .unwrap_or_default();
                    emit(
                        &progress,
                        FetchEvent::SourceFailed {
                            source: id,
                            role,
                            reason,
                            bad,
                        },
                    )
                    .await;
                }
            }
        }
        fill(&mut report, &sel, &spread_tally);
        self.finish(h, &req, report).await
    }

    /// The blob is complete (or the fetch failed): its size checked and kept.
    async fn finish(
        &self,
        h: iroh_blobs::Hash,
        req: &FetchRequest,
        mut report: FetchReport,
    ) -> Result<FetchReport, SwarmError> {
        match self.status(h).await? {
            BlobStatus::Complete { size } => {
                check_size(&report.hash, req.size, size)?;
                check_max(&report.hash, req.max_size, size)?;
                report.size = size;
            }
            _ => return Err(SwarmError::NotFound { hash: report.hash }),
        }
        self.keep_fetched(HashAndFormat::raw(h)).await?;
        Ok(report)
    }

    /// Spreads the blob's missing pieces over its sources: every listed source has a worker
    /// (each peer is observed, so what every peer holds counts, and the crowd of fetchers the
    /// origin's pieces are shared out among is all of them), and at most
    /// [`FetchRequest::sources_at_once`] pieces are asked for at once — the origin's always
    /// among them, the peers taking turns for the rest. Sources found meanwhile
    /// ([`FetchRequest::more_peers`]) join. Returns when every piece is verified or no source
    /// is left working.
    async fn spread(&self, ctx: &SpreadCtx<'_>) -> SpreadTally {
        let have = match self.store.blobs().observe(ctx.hash).await {
            Ok(b) => b.ranges,
            Err(_) => ChunkRanges::empty(),
        };
        let known = ctx.sources.lock().unwrap().len();
        let at_once = ctx.req.sources_at_once.max(1);
        let len = spread::piece_len(ctx.size, known.min(at_once).max(2));
        let mut pieces = Pieces::new(ctx.size, len, |r| ChunkRanges::bytes(r).is_subset(&have));
        pieces.set_me(spread::key_of(&self.endpoint_id()));
        pieces.set_visible(self.serves_partial(&ctx.hash));
        let pieces = Mutex::new(pieces);
        // Pieces asked of the peers at once: the origin's request is not counted (it is the
        // one source that can always finish, and in a crowd it sends each fetcher its share).
        let has_origin =
            (ctx.sources.lock().unwrap().iter()).any(|(_, r)| *r == SourceRole::Origin);
        let peer_turns = tokio::sync::Semaphore::new(if has_origin {
            at_once.saturating_sub(1).max(1)
        } else {
            at_once
        });
        debug!(hash = %ctx.hash, pieces = pieces.lock().unwrap().len(), piece_len = len, sources = known, "spreading the fetch");
        // Set, to the source whose piece was the last, when every piece is verified: the
        // spread ends then, without waiting for a worker still connecting or backing off.
        let (done, mut done_rx) = watch::channel(None);
        let (changed, _) = watch::channel(0u64);
        let bytes: Vec<AtomicU64> = (0..known + MAX_LATE_SOURCES)
            .map(|_| AtomicU64::new(0))
            .collect();
        let rates: Vec<Rate> = (0..known + MAX_LATE_SOURCES)
            .map(|_| Rate::default())
            .collect();
        let failures = Mutex::new(Vec::new());
        let shared = Shared {
            pieces: &pieces,
            peer_turns: &peer_turns,
            done: &done,
            changed: &changed,
            bytes: &bytes,
            rates: &rates,
            failures: &failures,
        };
        let mut tally = SpreadTally::default();
        let mut next = 0;
        let mut running = FuturesUnordered::new();
        let mut more = ctx.req.more_peers.clone();
        let mut late = 0;
        loop {
            // A worker for every source listed, while there is work.
            let listed = ctx.sources.lock().unwrap().len().min(bytes.len());
            while next < listed && !pieces.lock().unwrap().is_complete() {
                running.push(self.spread_worker(ctx, shared, next));
                next += 1;
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                end = running.next() => {
                    if let Some(end) = end {
                        tally.add(end);
                    }
                }
                changed = async { more.as_mut().expect("guarded").changed().await }, if more.is_some() => {
                    let Ok(()) = changed else {
                        more = None;
                        continue;
                    };
                    let found = more.as_mut().expect("guarded").borrow_and_update().clone();
                    late += self.join_late(ctx, found, MAX_LATE_SOURCES - late);
                }
                _ = done_rx.wait_for(|d| d.is_some()) => break,
            }
        }
        // Cancels the workers still connecting or backing off (none holds a piece).
        drop(running);
        let sources = ctx.sources.lock().unwrap().clone();
        tally.bytes = sources
            .iter()
            .zip(&bytes)
            .map(|((id, _), b)| (id.clone(), b.load(Ordering::Relaxed)))
            .filter(|(_, b)| *b > 0)
            .collect();
        tally.failures = failures.into_inner().unwrap_or_default();
        tally.last_piece_from = done.borrow().map(|i| sources[i].0.clone());
        tally
    }

    /// Adds the peers in `found` that are new to this fetch (not us, not already listed) to the
    /// spread's sources, at most `room`. Returns how many joined.
    fn join_late(&self, ctx: &SpreadCtx<'_>, found: Vec<PeerAddr>, room: usize) -> usize {
        let me = self.endpoint_id();
        let mut sources = ctx.sources.lock().unwrap();
        let mut addrs = ctx.addrs.lock().unwrap();
        let mut joined = 0;
        for p in found {
            if joined == room {
                break;
            }
            if p.endpoint == me || sources.iter().any(|(id, _)| *id == p.endpoint) {
                continue;
            }
            let Ok(addr) = p.to_endpoint_addr() else {
                continue;
            };
            info!(hash = %ctx.hash, source = %short(&p.endpoint), "a mirror announced during the fetch joins it");
            addrs.insert(p.endpoint.clone(), addr);
            sources.push((p.endpoint, SourceRole::Peer));
            joined += 1;
        }
        joined
    }

    /// One source's part in the spread: claim a piece, ask for exactly its range, repeat.
    async fn spread_worker(
        &self,
        ctx: &SpreadCtx<'_>,
        shared: Shared<'_>,
        index: usize,
    ) -> WorkerEnd {
        let pieces = shared.pieces;
        let (id, role) = ctx.sources.lock().unwrap()[index].clone();
        let id = &id;
        let mut end = WorkerEnd {
            id: id.clone(),
            ..Default::default()
        };
        let mut worker = spread::Worker::default();
        pieces.lock().unwrap().name(index, spread::key_of(id));
        // The origin's first claim waits (briefly) for the peers listed at the start to say
        // what they hold: the fetchers among them share the origin's pieces out with us.
        let mut first_look = (role == SourceRole::Origin).then(|| Instant::now() + FIRST_LOOK);
        let mut conn: Option<iroh::endpoint::Connection> = None;
        // What a peer has verified (an observe request, §5.3), kept up to date from the same
        // request's updates while the worker fetches and waits. The origin holds every piece.
        let mut holdings: Option<Holdings> = None;
        let mut idle_since: Option<Instant> = None;
        loop {
            // Connected before it claims: a source that cannot be reached holds no piece.
            let outcome = match self.connect_source(ctx, &mut conn, id, role).await {
                Err(f) => Err(f),
                // Asked what it holds first; the next turn claims from that.
                Ok(c) if role == SourceRole::Peer && holdings.is_none() => {
                    self.observe_source(&c, ctx).await.map(|h| {
                        shared.offer(index, &h);
                        holdings = Some(h);
                    })
                }
                Ok(c) => {
                    if let Some(h) = holdings.as_mut() {
                        if let Some(span) = h.catch_up() {
                            shared.offer_span(index, h, span);
                        }
                        if h.updates.is_none() && !h.whole(ctx.size) {
                            // Its observe request ended while it still lacks pieces: asked
                            // again on the next turn, its holdings not counting meanwhile.
                            holdings = None;
                            shared.withdraw(index);
                            continue;
                        }
                    }
                    let mut changed = shared.changed.subscribe();
                    if let Some(until) = first_look {
                        let listed = (ctx.sources.lock().unwrap().iter())
                            .filter(|(_, r)| *r == SourceRole::Peer)
                            .count();
                        if pieces.lock().unwrap().peers_listed() < listed && Instant::now() < until
                        {
                            let _ = tokio::time::timeout_at(until, changed.changed()).await;
                            continue;
                        }
                        first_look = None;
                    }
                    // A peer takes a turn for its request (the origin needs none).
                    let turn = match role {
                        SourceRole::Peer => Some(
                            shared
                                .peer_turns
                                .acquire()
                                .await
                                .expect("the semaphore is never closed"),
                        ),
                        SourceRole::Origin => None,
                    };
                    let source = match role {
                        SourceRole::Origin => spread::Source::Origin {
                            index,
                            slow: shared.origin_is_slow(index),
                        },
                        SourceRole::Peer => spread::Source::Peer(index),
                    };
                    let claimed = {
                        let mut p = pieces.lock().unwrap();
                        if role == SourceRole::Origin {
                            // Which fetchers in the crowd know us (observe us) now.
                            let sources = ctx.sources.lock().unwrap();
                            for (i, (peer, r)) in sources.iter().enumerate() {
                                if *r == SourceRole::Peer {
                                    p.aware(i, self.observed_by(ctx.hash, peer));
                                }
                            }
                        }
                        p.claim(source, Instant::now().into_std(), |n| {
                            rand::random_range(0..n)
                        })
                    };
                    let Some(piece) = claimed else {
                        drop(turn);
                        if pieces.lock().unwrap().is_complete() {
                            break;
                        }
                        let mut done = shared.done.subscribe();
                        // A partial mirror with none of the missing pieces that nobody else
                        // is fetching: after a stall timeout of that without getting any
                        // further itself, it leaves the room to others (not a failure); one
                        // that still gets pieces stays (it is a fetcher like us, and may soon
                        // hold what we miss). The origin and a complete mirror wait, and look
                        // again in a moment (a yielding origin's rates change).
                        let partial = holdings.as_ref().is_some_and(|h| !h.whole(ctx.size));
                        let idle_left = if partial {
                            let since = *idle_since.get_or_insert_with(Instant::now);
                            match ctx.req.stall_timeout.checked_sub(since.elapsed()) {
                                Some(left) if !left.is_zero() => left,
                                _ => {
                                    debug!(hash = %ctx.hash, source = %short(id), "partial mirror has none of the missing pieces; it leaves the spread");
                                    break;
                                }
                            }
                        } else {
                            LOOK_AGAIN
                        };
                        // Until a piece is given back or a peer withdrawn (that source
                        // failed), this source holds more, or the end.
                        tokio::select! {
                            _ = changed.changed() => {}
                            _ = done.wait_for(|d| d.is_some()) => {}
                            span = Holdings::next(&mut holdings) => {
                                shared.offer_span(index, holdings.as_ref().expect("updated"), span);
                                idle_since = None;
                            },
                            _ = tokio::time::sleep(idle_left) => {}
                        }
                        continue;
                    };
                    idle_since = None;
                    let (range, last) = {
                        let p = pieces.lock().unwrap();
                        (p.range(piece), p.is_last(piece))
                    };
                    let (started, before) =
                        (Instant::now(), shared.bytes[index].load(Ordering::Relaxed));
                    let fetch =
                        self.fetch_piece(ctx, &c, id, role, range, last, &shared.bytes[index]);
                    tokio::pin!(fetch);
                    let outcome = loop {
                        tokio::select! {
                            outcome = &mut fetch => break outcome,
                            span = Holdings::next(&mut holdings) => {
                                shared.offer_span(index, holdings.as_ref().expect("updated"), span);
                            },
                        }
                    };
                    drop(turn);
                    let mut p = pieces.lock().unwrap();
                    match outcome {
                        Ok(()) => {
                            p.done(piece);
                            if p.is_complete() {
                                shared.done.send_replace(Some(index));
                            }
                            // A finished piece can end the crowd the origin yields to.
                            shared.changed.send_modify(|n| *n += 1);
                            let got = shared.bytes[index].load(Ordering::Relaxed) - before;
                            shared.rate_sample(index, got, started.elapsed());
                        }
                        Err(_) => {
                            p.release(piece);
                            shared.changed.send_modify(|n| *n += 1);
                        }
                    }
                    outcome
                }
            };
            if let Err(f) = &outcome {
                if !matches!(f, Failure::Busy) {
                    let failure = (id.clone(), f.describe());
                    shared.failures.lock().unwrap().push(failure);
                    // A fresh connection for the next request: this one may be what failed.
                    // What the peer holds is asked again on it, and meanwhile stops counting.
                    if let Some(c) = conn.take() {
                        c.close(0u32.into(), b"retry");
                    }
                    if holdings.take().is_some() {
                        shared.withdraw(index);
                    }
                }
            }
            match worker.on_outcome(outcome, rand::random_range(0.5..=1.5)) {
                Next::Claim => {}
                Next::Wait(wait) => {
                    info!(hash = %ctx.hash, source = %short(id), ?role, retry_in_ms = wait.as_millis() as u64, "source is busy: its pieces go to the others meanwhile");
                    emit(
                        ctx.progress,
                        FetchEvent::Busy {
                            source: id.clone(),
                            role,
                            retry_in_ms: wait.as_millis() as u64,
                        },
                    )
                    .await;
                    // What it holds still counts (it is there, and asked again after the
                    // back-off): the origin does not send it again meanwhile; other peers may.
                    let mut done = shared.done.subscribe();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = done.wait_for(|d| d.is_some()) => {}
                    }
                    if let Some(h) = &holdings {
                        shared.offer(index, h);
                    }
                }
                Next::Stop { reason, bad } => {
                    if bad {
                        warn!(hash = %ctx.hash, source = %short(id), %reason, "source sent bytes that do not verify; dropped for this fetch");
                    } else {
                        debug!(hash = %ctx.hash, source = %short(id), %reason, "source leaves the spread");
                    }
                    emit(
                        ctx.progress,
                        FetchEvent::SourceFailed {
                            source: id.clone(),
                            role,
                            reason: reason.clone(),
                            bad,
                        },
                    )
                    .await;
                    end.stop = Some((reason, bad));
                    break;
                }
            }
        }
        shared.withdraw(index);
        shared.rates[index].forget();
        if let Some(c) = conn {
            c.close(0u32.into(), b"done");
        }
        end
    }

    /// What a peer holds of the blob: its first answer to an observe request. The request
    /// stays open, and its updates are read into the [`Holdings`] as the peer verifies more.
    /// A peer that does not serve the blob at all refuses it.
    async fn observe_source(
        &self,
        conn: &iroh::endpoint::Connection,
        ctx: &SpreadCtx<'_>,
    ) -> Result<Holdings, Failure> {
        let mut updates = self
            .store
            .remote()
            .observe(conn.clone(), ObserveRequest::new(ctx.hash))
            .boxed();
        match tokio::time::timeout(ctx.req.stall_timeout, updates.next()).await {
            Err(_) => Err(Failure::Stalled),
            Ok(None) => Err(Failure::Transfer(
                "observe stream ended without an answer".into(),
            )),
            Ok(Some(Err(e))) => Err(Failure::Transfer(format!("observe request: {e}"))),
            Ok(Some(Ok(bitfield))) => Ok(Holdings {
                held: bitfield.ranges,
                updates: Some(updates),
            }),
        }
    }

    /// The worker's connection to its source, connecting (within the stall timeout) when it
    /// has none.
    async fn connect_source(
        &self,
        ctx: &SpreadCtx<'_>,
        conn: &mut Option<iroh::endpoint::Connection>,
        id: &str,
        role: SourceRole,
    ) -> Result<iroh::endpoint::Connection, Failure> {
        let stall = ctx.req.stall_timeout;
        if conn.is_none() {
            emit(
                ctx.progress,
                FetchEvent::Trying {
                    source: id.to_string(),
                    role,
                },
            )
            .await;
            let addr = ctx.addrs.lock().unwrap()[id].clone();
            *conn = Some(self.dial(&addr, stall).await?);
        }
        Ok(conn.clone().expect("connected above"))
    }

    /// Asks one source for one piece's bytes (the last piece runs to the blob's end, so the
    /// source proves the size). Every chunk group is verified before it is stored.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_piece(
        &self,
        ctx: &SpreadCtx<'_>,
        conn: &iroh::endpoint::Connection,
        id: &str,
        role: SourceRole,
        range: std::ops::Range<u64>,
        last: bool,
        bytes: &AtomicU64,
    ) -> Result<(), Failure> {
        let stall = ctx.req.stall_timeout;
        let piece = if last {
            ChunkRanges::bytes(range.start..)
        } else {
            ChunkRanges::bytes(range)
        };
        // Only what is still missing: a piece given back by a source that failed mid-way
        // keeps the chunk groups that source had verified.
        let have = match self.store.blobs().observe(ctx.hash).await {
            Ok(b) => b.ranges,
            Err(_) => ChunkRanges::empty(),
        };
        let ranges = piece - &have;
        if ranges.is_empty() {
            return Ok(());
        }
        let request = GetRequest::builder().root(ranges).build(ctx.hash);
        let stream = self
            .store
            .remote()
            .execute_get(conn.clone(), request)
            .stream();
        tokio::pin!(stream);
        let mut seen = 0u64;
        loop {
            let item = match tokio::time::timeout(stall, stream.next()).await {
                Err(_) => return Err(Failure::Stalled),
                Ok(None) => return Err(Failure::Transfer("stream ended without a result".into())),
                Ok(Some(item)) => item,
            };
            match item {
                GetProgressItem::Progress(n) => {
                    let delta = n.saturating_sub(seen);
                    seen = n;
                    bytes.fetch_add(delta, Ordering::Relaxed);
                    let total = ctx.transferred.fetch_add(delta, Ordering::Relaxed) + delta;
                    let elapsed = ctx.started.elapsed().as_secs_f64().max(1e-6);
                    emit(
                        ctx.progress,
                        FetchEvent::Progress(FetchProgress {
                            hash: ctx.hash.to_hex(),
                            size: Some(ctx.size),
                            have: (ctx.have_before + total).min(ctx.size),
                            transferred: total,
                            rate_bytes_per_sec: total as f64 / elapsed,
                            source: id.to_string(),
                            role,
                            delta,
                        }),
                    )
                    .await;
                }
                GetProgressItem::Done(_) => return Ok(()),
                GetProgressItem::Error(e) => {
                    return Err(match classify(&e) {
                        Failure::Busy if seen > 0 => {
                            Failure::Transfer("refused busy after sending bytes".into())
                        }
                        f => f,
                    })
                }
            }
        }
    }

    /// Connects to a source for iroh-blobs, within the stall timeout.
    async fn dial(
        &self,
        addr: &iroh::EndpointAddr,
        stall: Duration,
    ) -> Result<iroh::endpoint::Connection, Failure> {
        match tokio::time::timeout(stall, self.endpoint.connect(addr.clone(), iroh_blobs::ALPN))
            .await
        {
            Err(_) => Err(Failure::Unreachable(
                "no answer within the stall timeout".into(),
            )),
            Ok(Err(e)) => Err(Failure::Unreachable(e.to_string())),
            Ok(Ok(c)) => Ok(c),
        }
    }

    async fn attempt(
        &self,
        ctx: &Attempt<'_>,
        addr: &iroh::EndpointAddr,
        sel: &mut Selector,
        transferred: &mut u64,
        progress: &ProgressSender,
    ) -> Result<(), Failure> {
        let h = ctx.hash;
        let conn = self.dial(addr, ctx.req.stall_timeout).await?;
        sel.on_connected(std::time::Instant::now());
        let have_before = self
            .store
            .remote()
            .local(HashAndFormat::raw(h))
            .await
            .map(|l| l.local_bytes())
            .unwrap_or(0);
        let stream = self
            .store
            .remote()
            .fetch(conn.clone(), HashAndFormat::raw(h))
            .stream();
        tokio::pin!(stream);
        let mut last = 0u64;
        let mut size = ctx.req.size;
        // The progress event of this attempt, `transferred` bytes in.
        let event = |size: Option<u64>, have: u64, transferred: u64, delta: u64| {
            let elapsed = ctx.started.elapsed().as_secs_f64().max(1e-6);
            FetchEvent::Progress(FetchProgress {
                hash: h.to_hex(),
                size,
                have,
                transferred,
                rate_bytes_per_sec: transferred as f64 / elapsed,
                source: ctx.id.to_string(),
                role: ctx.role,
                delta,
            })
        };
        let result = loop {
            // Judged on every turn, not only on a timeout: a trickle keeps the stream ready.
            if let Some(failure) = sel.check(std::time::Instant::now()) {
                break Err(failure);
            }
            let Some(deadline) = sel.deadline() else {
                break Err(Failure::Transfer("selector lost the current source".into()));
            };
            let item = match tokio::time::timeout_at(Instant::from_std(deadline), stream.next())
                .await
            {
                Err(_) => continue, // judged at the top of the loop
                Ok(None) => break Err(Failure::Transfer("stream ended without a result".into())),
                Ok(Some(item)) => item,
            };
            match item {
                GetProgressItem::Progress(n) => {
                    let delta = n.saturating_sub(last);
                    last = n;
                    *transferred += delta;
                    if size.is_none() {
                        // The size the source announced: shown, and held against `max_size`
                        // (it is verified only at the end, so a source claiming too much is
                        // left, not believed).
                        size = match self.status(h).await {
                            Ok(BlobStatus::Partial { size }) => size,
                            Ok(BlobStatus::Complete { size }) => Some(size),
                            _ => None,
                        };
                        if let (Some(s), Some(max)) = (size, ctx.req.max_size) {
                            if s > max {
                                break Err(Failure::Transfer(format!(
                                    "it announces {s} bytes, more than the {max} allowed"
                                )));
                            }
                        }
                    }
                    let have = have_before + last;
                    let have = size.map_or(have, |s| have.min(s));
                    emit_held(sel, progress, event(size, have, *transferred, delta)).await;
                    sel.on_progress(std::time::Instant::now(), delta);
                }
                GetProgressItem::Done(_) => {
                    if size.is_none() {
                        // The store learns the size from the last chunk, which it may not have
                        // written when the last progress went out: the last event says it.
                        if let Ok(BlobStatus::Complete { size: s }) = self.status(h).await {
                            emit_held(sel, progress, event(Some(s), s, *transferred, 0)).await;
                        }
                    }
                    break Ok(());
                }
                GetProgressItem::Error(e) => {
                    // Our servers answer busy before any byte; busy after bytes would dodge the
                    // rate floor and the attempt count, so it is a plain failure.
                    break Err(match classify(&e) {
                        Failure::Busy if last > 0 => {
                            Failure::Transfer("refused busy after sending bytes".into())
                        }
                        f => f,
                    });
                }
            }
        };
        conn.close(0u32.into(), b"done");
        result
    }
}

struct Attempt<'a> {
    hash: iroh_blobs::Hash,
    id: &'a str,
    role: SourceRole,
    req: &'a FetchRequest,
    started: Instant,
}

/// Hash mismatches are the source's fault (bad bytes); a refusal with code 2 is busy (§5.2);
/// everything else may be the network.
fn classify(e: &GetError) -> Failure {
    if e.iroh_error_code() == Some(iroh_blobs::protocol::ERR_LIMIT) {
        return Failure::Busy;
    }
    match e {
        GetError::Decode {
            source:
                d @ (DecodeError::LeafHashMismatch { .. } | DecodeError::ParentHashMismatch { .. }),
            ..
        } => Failure::Corrupt(d.to_string()),
        other => Failure::Transfer(format!("{other:#}")),
    }
}

fn check_size(hash: &str, expected: Option<u64>, actual: u64) -> Result<(), SwarmError> {
    if let Some(expected) = expected.filter(|e| *e != actual) {
        return Err(SwarmError::SizeMismatch {
            hash: hash.to_string(),
            expected,
            actual,
        });
    }
    Ok(())
}

fn check_max(hash: &str, max: Option<u64>, actual: u64) -> Result<(), SwarmError> {
    match max {
        Some(max) if actual > max => Err(SwarmError::TooLarge {
            hash: hash.to_string(),
            max,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Everything the fetch shares between its spread workers.
struct SpreadCtx<'a> {
    hash: iroh_blobs::Hash,
    size: u64,
    req: &'a FetchRequest,
    /// Origin first, then peers in the caller's order.
    /// Grows as mirrors are found during the fetch ([`FetchRequest::more_peers`]).
    sources: &'a Mutex<Vec<(String, SourceRole)>>,
    addrs: &'a Mutex<HashMap<String, iroh::EndpointAddr>>,
    started: Instant,
    /// Verified bytes held locally before this fetch (a resumed one).
    have_before: u64,
    transferred: &'a AtomicU64,
    progress: &'a ProgressSender,
}

/// What the spread's workers share.
#[derive(Clone, Copy)]
struct Shared<'a> {
    pieces: &'a Mutex<Pieces>,
    /// Turns for the peers' piece requests: at most this many at once.
    peer_turns: &'a tokio::sync::Semaphore,
    /// The index of the source whose piece completed the blob, once one has.
    done: &'a watch::Sender<Option<usize>>,
    /// Bumped whenever a piece is given back or a peer's holdings stop counting, for
    /// workers waiting for a piece they may take.
    changed: &'a watch::Sender<u64>,
    /// Verified bytes per source (by index).
    bytes: &'a [AtomicU64],
    /// Each working source's recent rate (by index), for [`spread::origin_is_slow`].
    rates: &'a [Rate],
    /// Every failed piece request: (endpoint id, why); busy answers are no failures.
    failures: &'a Mutex<Vec<(String, String)>>,
}

impl Shared<'_> {
    /// Peer `index` holds `h` ([`Pieces::offer`]).
    fn offer(&self, index: usize, h: &Holdings) {
        (self.pieces.lock().unwrap()).offer(index, Instant::now().into_std(), |r| h.held(r));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Peer `index`'s holdings changed within `span` (bytes) to `h`.
    fn offer_span(&self, index: usize, h: &Holdings, span: std::ops::Range<u64>) {
        self.pieces
            .lock()
            .unwrap()
            .offer_span(index, span, Instant::now().into_std(), |r| h.held(r));
    }

    /// A piece from source `index` brought `bytes` in `took`: its rate moves halfway there.
    fn rate_sample(&self, index: usize, bytes: u64, took: Duration) {
        if bytes == 0 {
            return;
        }
        let sample = (bytes as f64 / took.as_secs_f64().max(1e-3)) as u64;
        let rate = &self.rates[index];
        let new = match rate.get() {
            None => sample,
            Some(old) => (old + sample) / 2,
        };
        rate.set(new);
    }

    /// Whether the origin (source `index`) is slow now ([`spread::origin_is_slow`]).
    fn origin_is_slow(&self, index: usize) -> bool {
        let fastest_peer = (self.rates.iter().enumerate())
            .filter(|(i, _)| *i != index)
            .filter_map(|(_, r)| r.get())
            .max();
        spread::origin_is_slow(
            self.rates[index].get().map(|r| r as f64),
            fastest_peer.map(|r| r as f64),
        )
    }

    /// Peer `index` is not asked for now: its pieces may go to others (who are woken).
    fn withdraw(&self, index: usize) {
        self.pieces.lock().unwrap().withdraw(index);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// What a peer in the spread holds: the chunk groups it has verified, from its answer to an
/// observe request and that request's updates (the ranges it has verified since).
struct Holdings {
    held: ChunkRanges,
    /// The observe request's updates; `None` once it ended (the last holdings stand).
    updates: Option<futures::stream::BoxStream<'static, std::io::Result<Bitfield>>>,
}

impl Holdings {
    /// How much of `range` the peer has verified: whole, some chunk groups (it is receiving
    /// the range now), or none.
    fn held(&self, range: std::ops::Range<u64>) -> spread::Held {
        let want = ChunkRanges::bytes(range);
        if want.is_subset(&self.held) {
            spread::Held::Whole
        } else if want.is_disjoint(&self.held) {
            spread::Held::Nothing
        } else {
            spread::Held::Part
        }
    }

    fn whole(&self, size: u64) -> bool {
        self.held(0..size) == spread::Held::Whole
    }

    /// Applies an update: iroh-blobs' provider sends each change as the XOR of the old and
    /// the new ranges, so XOR applies it, a peer that dropped ranges included. Returns the
    /// span of bytes it touched; `None` when nothing changed or the request ended.
    fn add(&mut self, update: Option<std::io::Result<Bitfield>>) -> Option<std::ops::Range<u64>> {
        let Some(Ok(diff)) = update else {
            self.updates = None;
            return None;
        };
        let b = diff.ranges.boundaries();
        let start = b.first()?.to_bytes();
        // An odd number of boundaries: the last range runs to the end of the blob.
        let end = if b.len() % 2 == 1 {
            u64::MAX
        } else {
            b.last()?.to_bytes()
        };
        self.held ^= diff.ranges;
        Some(start..end)
    }

    /// Applies the updates already received; the span they touched, if any.
    fn catch_up(&mut self) -> Option<std::ops::Range<u64>> {
        let mut span: Option<std::ops::Range<u64>> = None;
        while let Some(update) = self.updates.as_mut().and_then(|u| u.next().now_or_never()) {
            if let Some(s) = self.add(update) {
                span = Some(match span {
                    None => s,
                    Some(t) => t.start.min(s.start)..t.end.max(s.end),
                });
            }
        }
        span
    }

    /// The next update that changes what the peer holds, as the span it touched (pending
    /// for ever when there is none to come: the origin, a peer not asked yet, a request that
    /// ended).
    async fn next(holdings: &mut Option<Holdings>) -> std::ops::Range<u64> {
        let Some(h) = holdings.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            let Some(updates) = h.updates.as_mut() else {
                return std::future::pending().await;
            };
            let update = updates.next().await;
            if let Some(span) = h.add(update) {
                return span;
            }
        }
    }
}

/// A source's recent rate in bytes/s and when it was measured; unknown when none was, or
/// longer than [`RATE_FRESH`] ago.
#[derive(Debug, Default)]
struct Rate(Mutex<Option<(u64, Instant)>>);

impl Rate {
    fn get(&self) -> Option<u64> {
        let measured = *self.0.lock().unwrap();
        measured
            .filter(|(_, at)| at.elapsed() < RATE_FRESH)
            .map(|(r, _)| r)
    }

    fn set(&self, bytes_per_sec: u64) {
        *self.0.lock().unwrap() = Some((bytes_per_sec, Instant::now()));
    }

    fn forget(&self) {
        *self.0.lock().unwrap() = None;
    }
}

/// How one source's part in the spread ended.
#[derive(Debug, Default)]
struct WorkerEnd {
    id: String,
    /// Why it left before the pieces ran out (and whether for bad bytes).
    stop: Option<(String, bool)>,
}

/// The spread's outcome, in the report's terms.
#[derive(Debug, Default)]
struct SpreadTally {
    bytes: Vec<(String, u64)>,
    bad: Vec<(String, String)>,
    failures: Vec<(String, String)>,
    last_piece_from: Option<String>,
    stopped: Vec<String>,
}

impl SpreadTally {
    fn add(&mut self, end: WorkerEnd) {
        if let Some((reason, bad)) = end.stop {
            if bad {
                self.bad.push((end.id.clone(), reason));
            }
            self.stopped.push(end.id);
        }
    }

    fn stopped(&self) -> Vec<String> {
        self.stopped.iter().map(|s| short(s).to_string()).collect()
    }
}

/// The report of a fetch that went on sequentially after a spread: both phases' bytes
/// (summed per source), bad sources and failures, the spread's first.
fn fill(report: &mut FetchReport, sel: &Selector, spread: &SpreadTally) {
    let mut bytes = spread.bytes.clone();
    for (id, b) in sel.bytes_per_source() {
        match bytes.iter_mut().find(|(i, _)| *i == id) {
            Some(entry) => entry.1 += b,
            None => bytes.push((id, b)),
        }
    }
    report.bytes_per_source = bytes;
    report.bad_sources = spread
        .bad
        .iter()
        .cloned()
        .chain(sel.bad_sources())
        .collect();
    report.failures = spread
        .failures
        .iter()
        .cloned()
        .chain(sel.failures().iter().cloned())
        .collect();
}

/// Emits an event for the current attempt. The time a slow consumer holds us counts neither as
/// a stall nor against the source's rate.
async fn emit_held(sel: &mut Selector, progress: &ProgressSender, ev: FetchEvent) {
    let start = std::time::Instant::now();
    emit(progress, ev).await;
    sel.on_held(start.elapsed());
}

async fn emit(progress: &ProgressSender, ev: FetchEvent) {
    if let Some(tx) = progress {
        // A dropped receiver only means the caller stopped watching.
        let _ = tx.send(ev).await;
    }
}
