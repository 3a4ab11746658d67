//! Helpers shared by the relay tests (real relays over WebSocket on loopback).
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use archy_relays::nostr::prelude::*;
use archy_relays::{PoolConfig, RelayPool, StreamItem, Subscription, Timeouts};

/// Safety net against hangs; never a performance assertion.
pub const SAFETY: Duration = Duration::from_secs(90);

/// A fixed point well in the past, so tests do not depend on the clock.
pub const T0: u64 = 1_700_000_000;

pub fn test_config(quorum: usize) -> PoolConfig {
    PoolConfig {
        quorum,
        timeouts: Timeouts {
            connect: Duration::from_secs(20),
            publish: Duration::from_secs(20),
            fetch: Duration::from_secs(60),
            probe: Duration::from_secs(20),
        },
        // Fast reconnects keep the fault tests short; the value is not asserted anywhere.
        reconnect_interval: Duration::from_millis(200),
        resume_overlap_secs: 0,
        ..PoolConfig::default()
    }
}

/// A kind 30078 event shaped like an Archy release (the relay layer does not read content).
pub fn release(keys: &Keys, d: &str, created_at: u64, content: &str) -> Event {
    EventBuilder::new(Kind::Custom(30078), content)
        .tags([Tag::identifier(d), Tag::hashtag("archy-app")])
        .custom_created_at(Timestamp::from_secs(created_at))
        .sign_with_keys(keys)
        .expect("sign")
}

pub fn app_filter() -> Filter {
    Filter::new().kind(Kind::Custom(30078)).hashtag("archy-app")
}

/// Polls `check` until it returns Some, or panics after [`SAFETY`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let wait = async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(SAFETY, wait)
        .await
        .unwrap_or_else(|_| panic!("gave up waiting for: {what}"))
}

pub async fn wait_connected(pool: &RelayPool, url: &RelayUrl, connected: bool) {
    eventually(&format!("{url} connected == {connected}"), || async {
        let h = pool.health().await;
        h.iter()
            .find(|h| &h.url == url)
            .filter(|h| h.connected == connected)
            .map(|_| ())
    })
    .await
}

/// The next stream item, or panic after [`SAFETY`].
pub async fn next_item(sub: &mut Subscription) -> StreamItem {
    tokio::time::timeout(SAFETY, sub.recv())
        .await
        .expect("subscription item within the safety timeout")
        .expect("subscription open")
}
