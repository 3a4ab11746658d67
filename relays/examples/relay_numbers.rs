//! Side-by-side numbers for the relay layer on loopback: the embedded relay (memory and LMDB)
//! and the third-party nostr-rs-relay (when installed), through the same `RelayPool`.
//!
//! `cargo run -p archy-relays --example relay_numbers --features test-relay [N]`
//!
//! Reports medians after a warm-up; compare rows of one run, not runs on different machines.

use std::time::{Duration, Instant};

use archy_relays::nostr::prelude::*;
use archy_relays::testing::NostrRsRelay;
use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig, PoolConfig, RelayPool};

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

async fn measure(name: &str, url: &str, n: usize) {
    let pool = RelayPool::connect([url], PoolConfig::default())
        .await
        .unwrap();
    let keys = Keys::generate();
    let filter = Filter::new()
        .kind(Kind::Custom(30078))
        .hashtag("archy-bench");
    let make = |i: usize| {
        EventBuilder::new(Kind::Custom(30078), "x".repeat(2048))
            .tags([
                Tag::identifier(format!("bench-{i}")),
                Tag::hashtag("archy-bench"),
            ])
            .sign_with_keys(&keys)
            .unwrap()
    };
    // Warm-up.
    for i in 0..10 {
        pool.publish(&make(n + i)).await.unwrap();
    }
    let mut publish = Vec::with_capacity(n);
    for i in 0..n {
        let ev = make(i);
        let t = Instant::now();
        pool.publish(&ev).await.unwrap();
        publish.push(t.elapsed());
    }
    let mut fetch = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        let t = Instant::now();
        count = pool.fetch(filter.clone(), None).await.unwrap().len();
        fetch.push(t.elapsed());
    }
    let mut rtt = Vec::new();
    for _ in 0..10 {
        if let Some(ms) = pool.health().await[0].rtt_ms {
            rtt.push(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    println!(
        "{name:<24} publish (EVENT→OK) median {:>7.3} ms | fetch {count} events median {:>8.2} ms | probe rtt median {:>6.3} ms",
        median(publish),
        median(fetch),
        if rtt.is_empty() { f64::NAN } else { median(rtt) },
    );
    pool.shutdown().await;
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let mem = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    measure("embedded (memory)", mem.url().as_str(), n).await;
    mem.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let lmdb = EmbeddedRelay::start(EmbeddedRelayConfig {
        db_dir: Some(dir.path().to_path_buf()),
        ..EmbeddedRelayConfig::default()
    })
    .await
    .unwrap();
    measure("embedded (LMDB)", lmdb.url().as_str(), n).await;
    lmdb.shutdown().await;

    match NostrRsRelay::start().await {
        Ok(relay) => measure("nostr-rs-relay 0.8.12", relay.url().as_str(), n).await,
        Err(e) => println!("nostr-rs-relay skipped: {e}"),
    }
}
