//! The relay pool: one set of relays (embedded and/or external), per-relay health, publishing
//! with a quorum, one-pass fetches and live subscriptions that survive reconnects.
//!
//! Writes and connection health go through a `nostr_sdk::Client` (it keeps one connection per
//! relay and reconnects on its own). Reads go through the crate's raw NIP-01 reader on their
//! own connections: nostr-sdk drops events whose signature fails, and the node must see those (PROTOCOL.md §4.1,
//! rule 1, `event-invalid`). **Events returned by `fetch` and `subscribe` are therefore NOT
//! verified** unless [`PoolConfig::drop_invalid_events`] is set: the caller checks them.
//!
//! De-duplication across relays (fetch, its pages, subscriptions) never goes by the id an event
//! claims: a hostile relay could then censor a genuine event by serving a forged copy under its
//! id first. It goes by [`DedupKey`] (the claimed id, the id recomputed from the fields, and the
//! signature), so a forged copy is handed over beside the genuine event, never in its place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nostr_sdk::prelude::{Client, Event, EventId, Filter, RelayOptions, RelayUrl, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::RelayError;
use crate::report::{PublishReport, RelayOutcome};
use crate::sync::{next_page_until, DedupKey, ResumeCursor, SeenIds};
use crate::wire::{self, Frame, Incoming};

/// How long each kind of relay operation may take before it counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection (initial connect, and each connection a fetch or subscription opens).
    pub connect: Duration,
    /// Waiting for a relay's `OK` to a published event.
    pub publish: Duration,
    /// A whole one-pass fetch from one relay (all pages up to the last EOSE).
    pub fetch: Duration,
    /// The health probe (a REQ that matches nothing, up to its EOSE).
    pub probe: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            publish: Duration::from_secs(10),
            fetch: Duration::from_secs(60),
            probe: Duration::from_secs(5),
        }
    }
}

/// Pool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// How many relays must accept a published event for `publish` to succeed (1..=relays).
    pub quorum: usize,
    /// Timeouts of each operation.
    pub timeouts: Timeouts,
    /// Wait between reconnect attempts (nostr-sdk's write connections and subscriptions alike).
    pub reconnect_interval: Duration,
    /// A resumed subscription re-asks this many seconds before the newest `created_at` it saw,
    /// because authors choose `created_at` and events can arrive out of order. Duplicates are
    /// removed ([`DedupKey`]).
    pub resume_overlap_secs: u64,
    /// Drop events whose id or signature does not verify before handing them over. Off by
    /// default: the node verifies itself and records invalid events as evidence.
    pub drop_invalid_events: bool,
    /// Events per REQ page of a fetch (relays may cap lower; paging handles that).
    pub page_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            quorum: 1,
            timeouts: Timeouts::default(),
            reconnect_interval: Duration::from_secs(5),
            resume_overlap_secs: 60,
            drop_invalid_events: false,
            page_size: 500,
        }
    }
}

/// The state of one relay, as `health()` saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayHealth {
    /// The relay.
    pub url: RelayUrl,
    /// Whether the pool's write connection is up.
    pub connected: bool,
    /// nostr-sdk's connection status (Connected, Disconnected, Connecting, …).
    pub status: String,
    /// The last error seen on this relay (connect, publish, fetch or probe), if any.
    pub last_error: Option<String>,
    /// Round-trip of a probe REQ (matches nothing) up to its EOSE, in milliseconds; None when
    /// not connected or the probe failed.
    pub rtt_ms: Option<f64>,
}

/// The result of a one-pass fetch, with each relay's part.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// Matching events from every relay that answered, each exact copy once ([`DedupKey`]: a
    /// forged copy carrying another event's id is kept beside it, not in its place), in
    /// (`created_at`, id) order (the order the node processes them in). Copies are dropped as
    /// pages arrive, so the pass never holds more than one copy of an event.
    pub events: Vec<Event>,
    /// Per relay: the number of events it returned (before de-duplication), or why it failed.
    pub per_relay: Vec<(RelayUrl, Result<usize, String>)>,
}

/// One item of a live subscription.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// An event not delivered before (by any relay of the subscription; the same event field
    /// for field, [`DedupKey`], so a forged copy under a delivered event's id still comes, and
    /// the genuine event still comes after a forged copy). Unverified unless
    /// [`PoolConfig::drop_invalid_events`] is set.
    Event {
        /// The relay it came from first.
        relay: RelayUrl,
        /// The event, as the relay sent it.
        event: Box<Event>,
    },
    /// The relay sent EOSE: its stored events up to now were delivered (after each (re)connect).
    CaughtUp {
        /// The relay.
        relay: RelayUrl,
    },
    /// The subscription's connection to this relay is down; it retries on its own.
    Disconnected {
        /// The relay.
        relay: RelayUrl,
        /// Why.
        error: String,
    },
}

/// Keepalive of a subscription connection: ping this often, give up after two silent rounds.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Events ([`DedupKey`]s) remembered by a subscription for de-duplication.
const SEEN_CAPACITY: usize = 200_000;
/// Guard against a relay that keeps returning "new" pages forever.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, Default)]
struct Shared {
    last_error: Mutex<HashMap<RelayUrl, String>>,
}

impl Shared {
    fn record_error(&self, url: &RelayUrl, error: &str) {
        tracing::debug!(relay = %url, %error, "relay error");
        if let Ok(mut map) = self.last_error.lock() {
            map.insert(url.clone(), error.to_string());
        }
    }

    fn last_error(&self, url: &RelayUrl) -> Option<String> {
        self.last_error.lock().ok()?.get(url).cloned()
    }
}

/// A set of relays used together. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct RelayPool {
    client: Client,
    urls: Vec<RelayUrl>,
    config: PoolConfig,
    shared: Arc<Shared>,
}

/// Parses and de-duplicates relay URLs, keeping their order.
pub fn parse_relay_urls<I, S>(urls: I) -> Result<Vec<RelayUrl>, RelayError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut parsed: Vec<RelayUrl> = Vec::new();
    for raw in urls {
        let raw = raw.as_ref().trim();
        let url = RelayUrl::parse(raw).map_err(|e| RelayError::InvalidUrl {
            url: raw.to_string(),
            reason: e.to_string(),
        })?;
        if !parsed.contains(&url) {
            parsed.push(url);
        }
    }
    Ok(parsed)
}

impl RelayPool {
    /// Connects to `urls` (ws:// or wss://). Relays that are down do not make this fail: they
    /// show up in [`RelayPool::health`] and are retried every `reconnect_interval`.
    pub async fn connect<I, S>(urls: I, config: PoolConfig) -> Result<Self, RelayError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let urls = parse_relay_urls(urls)?;
        if urls.is_empty() {
            return Err(RelayError::NoRelays);
        }
        if config.quorum == 0 || config.quorum > urls.len() {
            return Err(RelayError::InvalidQuorum {
                quorum: config.quorum,
                relays: urls.len(),
            });
        }
        let client = Client::default();
        let opts = RelayOptions::new()
            .reconnect(true)
            .retry_interval(config.reconnect_interval)
            .adjust_retry_interval(false);
        for url in &urls {
            client
                .pool()
                .add_relay(url.clone(), opts.clone())
                .await
                .map_err(|e| RelayError::Client(format!("cannot add relay {url}: {e}")))?;
        }
        let pool = Self {
            client,
            urls,
            config,
            shared: Arc::new(Shared::default()),
        };
        let relays = pool.client.relays().await;
        let attempts = pool.urls.iter().filter_map(|url| {
            let relay = relays.get(url)?.clone();
            let timeout = pool.config.timeouts.connect;
            let shared = pool.shared.clone();
            let url = url.clone();
            Some(async move {
                if let Err(e) = relay.try_connect(timeout).await {
                    shared.record_error(&url, &format!("cannot connect: {e}"));
                    // Keep retrying in the background.
                    relay.connect();
                }
            })
        });
        futures::future::join_all(attempts).await;
        Ok(pool)
    }

    /// The relays of the pool, in configuration order.
    pub fn urls(&self) -> &[RelayUrl] {
        &self.urls
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The underlying nostr-sdk client (write connections), for what this API does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Probes every relay: connection state, last error, and the round-trip of a REQ that
    /// matches nothing (the connection handshake is not timed).
    pub async fn health(&self) -> Vec<RelayHealth> {
        let relays = self.client.relays().await;
        let probes = self.urls.iter().map(|url| {
            let relay = relays.get(url).cloned();
            async move {
                let Some(relay) = relay else {
                    return RelayHealth {
                        url: url.clone(),
                        connected: false,
                        status: "removed".into(),
                        last_error: self.shared.last_error(url),
                        rtt_ms: None,
                    };
                };
                let mut rtt_ms = None;
                if relay.is_connected() {
                    match probe_rtt(url, self.config.timeouts.probe).await {
                        Ok(rtt) => rtt_ms = Some(rtt.as_secs_f64() * 1000.0),
                        Err(e) => self.shared.record_error(url, &format!("probe failed: {e}")),
                    }
                } else {
                    // Learn why: nostr-sdk does not expose its last connection error.
                    if let Err(e) = wire::connect(url, self.config.timeouts.probe).await {
                        self.shared.record_error(url, &e);
                    }
                }
                let status = relay.status();
                RelayHealth {
                    url: url.clone(),
                    connected: relay.is_connected(),
                    status: status.to_string(),
                    last_error: self.shared.last_error(url),
                    rtt_ms,
                }
            }
        });
        futures::future::join_all(probes).await
    }

    /// Sends a signed event to every relay and waits for each relay's `OK` (or failure).
    ///
    /// The event is sent as is (no signature check here: the hostile-event tests publish bad
    /// events on purpose). Returns the report when at least `quorum` relays accepted it, else
    /// [`RelayError::QuorumNotMet`] carrying the same report.
    pub async fn publish(&self, event: &Event) -> Result<PublishReport, RelayError> {
        let relays = self.client.relays().await;
        let sends = self.urls.iter().map(|url| {
            let relay = relays.get(url).cloned();
            async move {
                let outcome = match relay {
                    None => RelayOutcome::Failed("relay was removed from the pool".into()),
                    Some(relay) if !relay.is_connected() => {
                        let why = self
                            .shared
                            .last_error(url)
                            .unwrap_or_else(|| "no error recorded yet".into());
                        RelayOutcome::Failed(format!(
                            "not connected (status {}; last error: {why})",
                            relay.status()
                        ))
                    }
                    Some(relay) => {
                        match tokio::time::timeout(
                            self.config.timeouts.publish,
                            relay.send_event(event),
                        )
                        .await
                        {
                            Ok(Ok(_)) => RelayOutcome::Accepted,
                            Ok(Err(nostr_sdk::pool::relay::Error::RelayMessage(m))) => {
                                RelayOutcome::Refused(m)
                            }
                            Ok(Err(e)) => RelayOutcome::Failed(e.to_string()),
                            Err(_) => RelayOutcome::Failed(format!(
                                "no OK within {}s",
                                self.config.timeouts.publish.as_secs()
                            )),
                        }
                    }
                };
                match &outcome {
                    RelayOutcome::Accepted => {}
                    RelayOutcome::Refused(m) => {
                        self.shared.record_error(url, &format!("refused: {m}"))
                    }
                    RelayOutcome::Failed(e) => self.shared.record_error(url, e),
                }
                (url.clone(), outcome)
            }
        });
        let per_relay = futures::future::join_all(sends).await;
        let report = PublishReport::new(event.id, per_relay, self.config.quorum);
        tracing::info!(event = %event.id, accepted = report.accepted, quorum = report.quorum, "published");
        if report.quorum_met {
            Ok(report)
        } else {
            Err(RelayError::QuorumNotMet(Box::new(report)))
        }
    }

    /// One pass over every relay: all stored events matching `filter` (with `since`, if given,
    /// replacing the filter's), de-duplicated ([`DedupKey`], never by the claimed id alone).
    /// Relays that are down are skipped; it fails only when no relay answered.
    pub async fn fetch(
        &self,
        filter: Filter,
        since: Option<Timestamp>,
    ) -> Result<Vec<Event>, RelayError> {
        Ok(self.fetch_report(filter, since).await?.events)
    }

    /// [`RelayPool::fetch`] with each relay's count or error.
    pub async fn fetch_report(
        &self,
        filter: Filter,
        since: Option<Timestamp>,
    ) -> Result<FetchReport, RelayError> {
        let pages = std::sync::Mutex::new(vec![Vec::new(); self.urls.len()]);
        let per_relay = self
            .fetch_pages(filter, since, |relay, page| {
                pages.lock().unwrap_or_else(|p| p.into_inner())[relay].extend(page)
            })
            .await?;
        let pages = pages.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut events: Vec<Event> = pages.into_iter().flatten().collect();
        // Stable: events with the same time and id keep the relays' configuration order.
        events.sort_by_key(|e| (e.created_at, e.id));
        Ok(FetchReport { events, per_relay })
    }

    /// One pass over every relay like [`RelayPool::fetch_report`], handing each page's new
    /// events to `sink` with the index of its relay in [`RelayPool::urls`] as it arrives (in no
    /// particular order across relays), so the caller can start on them while the other pages
    /// are still on their way. Returns each relay's count or error; fails only when no relay
    /// answered.
    pub async fn fetch_pages(
        &self,
        filter: Filter,
        since: Option<Timestamp>,
        sink: impl Fn(usize, Vec<Event>) + Sync,
    ) -> Result<Vec<(RelayUrl, Result<usize, String>)>, RelayError> {
        let filter = match since {
            Some(s) => filter.since(s),
            None => filter,
        };
        // One de-duplication across every relay and page, as pages arrive: a copy another
        // relay already delivered is dropped at once, so a pass holds each event once however
        // many relays hold it (and is checked once by the caller).
        let seen = std::sync::Mutex::new(SeenIds::new(usize::MAX));
        let sink = &sink;
        let fetches = self.urls.iter().enumerate().map(|(relay, url)| {
            let filter = filter.clone();
            let seen = &seen;
            let sink = move |page| sink(relay, page);
            async move {
                let result = match tokio::time::timeout(
                    self.config.timeouts.fetch,
                    self.fetch_one(url, &filter, seen, &sink),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "fetch did not finish within {}s",
                        self.config.timeouts.fetch.as_secs()
                    )),
                };
                if let Err(e) = &result {
                    self.shared.record_error(url, e);
                }
                (url.clone(), result)
            }
        });
        let per_relay = futures::future::join_all(fetches).await;
        let errors: Vec<(RelayUrl, String)> = per_relay
            .iter()
            .filter_map(|(u, r)| r.as_ref().err().map(|e| (u.clone(), e.clone())))
            .collect();
        if errors.len() == self.urls.len() {
            return Err(RelayError::NoRelayAnswered(errors));
        }
        Ok(per_relay)
    }

    /// All matching stored events of one relay, paging backwards with `until` when the filter
    /// has no `limit` of its own. Hands each page's events that no relay had delivered before
    /// to `sink` (`seen`, shared by the relays of one fetch; by [`DedupKey`], never by the
    /// claimed id alone: a hostile relay that answers first must not make a forged copy take
    /// the place of the genuine event), and returns how many the relay returned.
    async fn fetch_one(
        &self,
        url: &RelayUrl,
        filter: &Filter,
        seen: &std::sync::Mutex<SeenIds>,
        sink: &(impl Fn(Vec<Event>) + Sync),
    ) -> Result<usize, String> {
        let mut ws = wire::connect(url, self.config.timeouts.connect).await?;
        let mut mine = SeenIds::new(usize::MAX);
        let mut returned = 0;
        let paged = filter.limit.is_none();
        let mut page_filter = if paged {
            filter.clone().limit(self.config.page_size)
        } else {
            filter.clone()
        };
        for page_no in 0..MAX_PAGES {
            let sub = format!("archy-fetch-{page_no}");
            let page = wire::req_until_eose(&mut ws, &sub, &page_filter).await?;
            let stamps: Vec<(EventId, Timestamp)> =
                page.iter().map(|e| (e.id, e.created_at)).collect();
            let mut new_in_page = 0;
            let mut out = Vec::new();
            for event in page {
                let key = DedupKey::of(&event);
                if !mine.insert(key) {
                    continue;
                }
                new_in_page += 1;
                returned += 1;
                let first = seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
                if first && self.admit(&event) {
                    out.push(event);
                }
            }
            if !out.is_empty() {
                sink(out);
            }
            if !paged {
                break;
            }
            match next_page_until(&stamps, new_in_page) {
                Some(until) => page_filter = page_filter.until(until),
                None => break,
            }
        }
        let _ = ws.close(None).await;
        Ok(returned)
    }

    fn admit(&self, event: &Event) -> bool {
        if self.config.drop_invalid_events && event.verify().is_err() {
            tracing::debug!(event = %event.id, "dropped an event that does not verify");
            return false;
        }
        true
    }

    /// A live subscription on every relay of the pool: stored events first (each relay sends
    /// `CaughtUp` at its EOSE), then new ones as they arrive, de-duplicated across relays.
    ///
    /// Each relay's connection reconnects on its own every `reconnect_interval` and resumes
    /// from the newest `created_at` it delivered (minus `resume_overlap_secs`), so nothing is
    /// lost while a relay is away and nothing is delivered twice. Dropping the
    /// [`Subscription`] ends it.
    pub fn subscribe(&self, filter: Filter, since: Option<Timestamp>) -> Subscription {
        let (tx, rx) = mpsc::channel(1024);
        let seen = Arc::new(Mutex::new(SeenIds::new(SEEN_CAPACITY)));
        let mut cursors = HashMap::new();
        let mut tasks = Vec::new();
        for url in &self.urls {
            let cursor = Arc::new(Mutex::new(ResumeCursor::new(
                since,
                self.config.resume_overlap_secs,
            )));
            cursors.insert(url.clone(), cursor.clone());
            let task = SubscriptionTask {
                url: url.clone(),
                filter: filter.clone(),
                cursor,
                seen: seen.clone(),
                tx: tx.clone(),
                pool: self.clone(),
            };
            tasks.push(tokio::spawn(task.run()));
        }
        Subscription {
            rx,
            tasks,
            cursors,
            initial: since,
        }
    }

    /// Closes the pool's write connections. Subscriptions end when dropped.
    pub async fn shutdown(&self) {
        self.client.shutdown().await;
    }
}

/// Times a REQ that matches nothing, from sending it to its EOSE, on a fresh connection of
/// our own (the handshake is not timed).
///
/// Not on nostr-sdk's connection: it does not set TCP_NODELAY, so a REQ sent right after a
/// CLOSE waits for the delayed ACK (~40 ms on Linux) and the figure would measure that
/// instead of the relay. Not with `Relay::fetch_events` either, for the same reason.
async fn probe_rtt(url: &RelayUrl, timeout: Duration) -> Result<Duration, String> {
    let probe = async {
        let mut ws = wire::connect(url, timeout).await?;
        let filter = Filter::new().id(EventId::all_zeros()).limit(1);
        let started = Instant::now();
        wire::req_until_eose(&mut ws, "archy-probe", &filter).await?;
        let rtt = started.elapsed();
        let _ = ws.close(None).await;
        Ok(rtt)
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(format!("no EOSE within {}s", timeout.as_secs())),
    }
}

/// A live subscription (see [`RelayPool::subscribe`]). Dropping it closes its connections.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<StreamItem>,
    tasks: Vec<JoinHandle<()>>,
    cursors: HashMap<RelayUrl, Arc<Mutex<ResumeCursor>>>,
    initial: Option<Timestamp>,
}

impl Subscription {
    /// The next item (event, caught-up mark or disconnect notice).
    pub async fn recv(&mut self) -> Option<StreamItem> {
        self.rx.recv().await
    }

    /// The next event, skipping status items.
    pub async fn next_event(&mut self) -> Option<(RelayUrl, Event)> {
        loop {
            if let StreamItem::Event { relay, event } = self.recv().await? {
                return Some((relay, *event));
            }
        }
    }

    /// A `since` to store and pass to `subscribe` after a restart: the oldest of the relays'
    /// resume points, so no relay misses anything (the overlap comes back as duplicates).
    pub fn resume_point(&self) -> Option<Timestamp> {
        let mut point: Option<Timestamp> = None;
        for cursor in self.cursors.values() {
            let since = cursor.lock().ok().and_then(|c| c.since());
            match since {
                None => return self.initial,
                Some(s) => {
                    point = Some(match point {
                        Some(p) => std::cmp::min(p, s),
                        None => s,
                    })
                }
            }
        }
        point
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct SubscriptionTask {
    url: RelayUrl,
    filter: Filter,
    cursor: Arc<Mutex<ResumeCursor>>,
    seen: Arc<Mutex<SeenIds>>,
    tx: mpsc::Sender<StreamItem>,
    pool: RelayPool,
}

impl SubscriptionTask {
    async fn run(self) {
        let mut attempt: u64 = 0;
        loop {
            attempt += 1;
            let error = match wire::connect(&self.url, self.pool.config.timeouts.connect).await {
                Ok(mut ws) => {
                    let error = self.session(&mut ws, attempt).await;
                    let _ = ws.close(None).await;
                    error
                }
                Err(e) => e,
            };
            if self.tx.is_closed() {
                return;
            }
            self.pool.shared.record_error(&self.url, &error);
            let notice = StreamItem::Disconnected {
                relay: self.url.clone(),
                error,
            };
            if self.tx.send(notice).await.is_err() {
                return;
            }
            tokio::time::sleep(self.pool.config.reconnect_interval).await;
        }
    }

    /// One connection's life: REQ from the cursor, then forward events until it breaks.
    /// Returns why it ended.
    async fn session(&self, ws: &mut wire::Ws, attempt: u64) -> String {
        let since = self.cursor.lock().ok().and_then(|c| c.since());
        let filter = match since {
            Some(s) => self.filter.clone().since(s),
            None => self.filter.clone(),
        };
        let sub = format!("archy-live-{attempt}");
        if let Err(e) = wire::send_req(ws, &sub, &filter).await {
            return e;
        }
        tracing::debug!(relay = %self.url, since = ?since.map(|s| s.as_secs()), "subscription (re)started");
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        keepalive.tick().await;
        let mut silent_rounds = 0u32;
        loop {
            tokio::select! {
                frame = wire::next_frame(ws) => {
                    silent_rounds = 0;
                    let text = match frame {
                        None => return "connection ended".to_string(),
                        Some(Err(e)) => return e,
                        Some(Ok(Frame::Activity)) => continue,
                        Some(Ok(Frame::Text(t))) => t,
                    };
                    let item = match wire::parse_incoming(&text) {
                        Incoming::Event { sub: s, event } if s == sub => {
                            if !wire::matches(&filter, &event) || !self.pool.admit(&event) {
                                continue;
                            }
                            if let Ok(mut c) = self.cursor.lock() {
                                c.observe(event.created_at, Timestamp::now());
                            }
                            // By DedupKey (computed outside the lock), not by the claimed id.
                            let key = DedupKey::of(&event);
                            let fresh = self.seen.lock().map(|mut s| s.insert(key)).unwrap_or(true);
                            if !fresh {
                                continue;
                            }
                            StreamItem::Event { relay: self.url.clone(), event }
                        }
                        Incoming::Eose { sub: s } if s == sub => StreamItem::CaughtUp { relay: self.url.clone() },
                        Incoming::Closed { sub: s, message } if s == sub => {
                            return format!("relay closed the subscription: {message}");
                        }
                        _ => continue,
                    };
                    if self.tx.send(item).await.is_err() {
                        return "subscription dropped".to_string();
                    }
                }
                _ = keepalive.tick() => {
                    silent_rounds += 1;
                    if silent_rounds > 2 {
                        return format!("no traffic for {}s (ping unanswered)", KEEPALIVE.as_secs() * 2);
                    }
                    use futures::SinkExt;
                    if let Err(e) = ws.send(tokio_tungstenite::tungstenite::Message::Ping(Vec::new().into())).await {
                        return format!("send failed: {e}");
                    }
                }
            }
        }
    }
}
