//! Release verification and discovery, each side by side with its ceiling in one run.
//!
//!   cargo run --release -p archy-marketplace --example releases -- [N=10000] [SYNC_N=10000] [runs=3] [sync_runs=1] [MANY_N=min(SYNC_N, 10000)]
//!
//! 1. Verification: app-release events/s through `release::check_release` (Nostr signature,
//!    JWS, key binding, policy), through `Catalog::ingest` (the same plus one catalog commit per
//!    event, as for a live event) and `Catalog::ingest_all` (a sync pass: one commit per batch),
//!    vs. the raw rate of this machine's primitives: `Event::verify` (event id + BIP-340
//!    Schnorr) and one Ed25519 verify over the manifest's canonical bytes. Breakdown rows
//!    (JWS alone) explain where the time goes.
//! 2. Discovery: `discovery::sync_once` of SYNC_N releases into an empty catalog from the
//!    embedded relay and from nostr-rs-relay (when installed), vs. the same relay fetch alone.
//! 3. Many relays: MANY_N releases spread over 20 nostr-rs-relay processes, each release on
//!    3 of them, synced by one pass over the 20, vs. one more nostr-rs-relay holding the union;
//!    the catalog's verification counter says how many release checks ran.
//!
//! Medians after one warm-up run; ratios are the claim, absolute rates are context.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use archy_marketplace::catalog::Catalog;
use archy_marketplace::envelope;
use archy_marketplace::events::release_filter;
use archy_marketplace::identity::Identity;
use archy_marketplace::jcs::canonical_bytes;
use archy_marketplace::manifest::PolicyConfig;
use archy_marketplace::node::discovery;
use archy_marketplace::release::{self, KIND_APP_DATA};
use archy_relays::testing::NostrRsRelay;
use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig, PoolConfig, RelayPool};
use ed25519_dalek::{Signer, SigningKey, Verifier};
use nostr_sdk::prelude::{Event, EventBuilder, Keys, Kind, SecretKey, Tag, Timestamp};
use serde_json::{json, Map, Value};

#[path = "../../tests/bench_common.rs"]
mod bench_common;
use bench_common::{median, vm_hwm};

/// Median items/s of `f` over `items` items: one warm-up, then `runs` timed runs.
fn per_sec(items: usize, runs: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut v = Vec::new();
    for run in 0..=runs {
        let t = Instant::now();
        f(run);
        let secs = t.elapsed().as_secs_f64();
        if run > 0 {
            v.push(items as f64 / secs);
        }
    }
    median(v)
}

fn identity(seed: u32) -> Identity {
    let nostr =
        hex::encode(blake3::hash(&[b"n".as_slice(), &seed.to_le_bytes()].concat()).as_bytes());
    Identity::from_keys(
        SigningKey::from_bytes(
            blake3::hash(&[b"d".as_slice(), &seed.to_le_bytes()].concat()).as_bytes(),
        ),
        Keys::new(SecretKey::from_hex(&nostr).expect("a valid secp256k1 key")),
    )
}

fn manifest(who: &Identity, id: &str) -> Map<String, Value> {
    json!({
        "schema": "archy.app/v1",
        "id": id,
        "version": "1.0.0",
        "name": format!("App {id}"),
        "summary": format!("Benchmark app {id}"),
        "publisher": {"did": who.did(), "nostr": who.nostr_hex()},
        "origin": {"endpoint": "ab".repeat(32), "addrs": ["127.0.0.1:4433"]},
        "image": {
            "name": format!("localhost/bench/{id}:1.0.0"),
            "id": format!("sha256:{}", "cd".repeat(32)),
            "archive": {"blake3": "ef".repeat(32), "size": 1024, "format": "oci-archive"}
        },
        "ports": [{"container": 8080, "host": 18080}],
        "published_at": 1_700_000_000u64
    })
    .as_object()
    .expect("object")
    .clone()
}

/// `n` honest releases from 10 publishers with distinct `created_at` seconds (so relays page
/// them cleanly), built with the same tags as `release::build_release_event`.
fn releases(n: usize, now: u64) -> Vec<Event> {
    let publishers: Vec<Identity> = (0..10).map(identity).collect();
    (0..n)
        .map(|i| {
            let who = &publishers[i % publishers.len()];
            let env = envelope::sign(manifest(who, &format!("bench-{i}")), who);
            let template = release::build_release_event(&env, who.nostr_keys()).expect("signs");
            EventBuilder::new(Kind::Custom(KIND_APP_DATA), template.content.clone())
                .tags(template.tags.iter().cloned().collect::<Vec<Tag>>())
                .custom_created_at(Timestamp::from(now - n as u64 - 10 + i as u64))
                .sign_with_keys(who.nostr_keys())
                .expect("signs")
        })
        .collect()
}

fn verification(events: &[Event], runs: usize, now: u64) -> anyhow::Result<()> {
    let n = events.len();
    let policy = PolicyConfig::default();
    let schnorr = per_sec(n, runs, |_| {
        for e in events {
            assert!(e.verify().is_ok());
        }
    });
    // Ed25519 over the same canonical bytes the release's JWS covers.
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let signed: Vec<(Vec<u8>, ed25519_dalek::Signature)> = events
        .iter()
        .map(|e| {
            let env = envelope::Envelope::from_json(&e.content).expect("envelope");
            let bytes = canonical_bytes(&Value::Object(env.manifest));
            let sig = key.sign(&bytes);
            (bytes, sig)
        })
        .collect();
    let vk = key.verifying_key();
    let ed25519 = per_sec(n, runs, |_| {
        for (bytes, sig) in &signed {
            assert!(vk.verify(bytes, sig).is_ok());
        }
    });
    // Both primitives once per release: the floor of any full check.
    let raw = 1.0 / (1.0 / schnorr + 1.0 / ed25519);
    let envelopes: Vec<envelope::Envelope> = events
        .iter()
        .map(|e| envelope::Envelope::from_json(&e.content).expect("envelope"))
        .collect();
    let jws_only = per_sec(n, runs, |_| {
        for env in &envelopes {
            assert!(envelope::verify_signature(env).is_ok());
        }
    });
    let parse_only = per_sec(n, runs, |_| {
        for e in events {
            assert!(envelope::Envelope::from_json(&e.content).is_ok());
        }
    });
    // Pieces of the JWS check, to explain its cost against the raw Ed25519 row.
    let dids: Vec<String> = envelopes
        .iter()
        .map(|env| {
            env.manifest["publisher"]["did"]
                .as_str()
                .expect("did")
                .to_owned()
        })
        .collect();
    let did_decode = per_sec(n, runs, |_| {
        for d in &dids {
            assert!(archy_marketplace::did::key_from_did(d).is_ok());
        }
    });
    let jcs_only = per_sec(n, runs, |_| {
        for env in &envelopes {
            assert!(!canonical_bytes(&Value::Object(env.manifest.clone())).is_empty());
        }
    });
    let ed25519_strict = per_sec(n, runs, |_| {
        for (bytes, sig) in &signed {
            assert!(vk.verify_strict(bytes, sig).is_ok());
        }
    });
    let validate_only = per_sec(n, runs, |_| {
        for env in &envelopes {
            assert!(archy_marketplace::manifest::validate(&env.manifest, &policy, now).is_empty());
        }
    });
    let envelope_verify = per_sec(n, runs, |_| {
        for env in &envelopes {
            assert!(envelope::verify(env, &policy, now).is_ok());
        }
    });
    // The catalog's storage floor: one redb write transaction with one small insert, committed
    // (durably, redb's default) per event — the shape of `Catalog::ingest`.
    const TABLE: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("bench");
    let tmp_redb = tempfile::tempdir()?;
    // The storage-bound rows (one durable commit per event) run over at most 2,000 events: their
    // per-event cost does not depend on the count, and 10,000 would take minutes per run.
    let stored = &events[..n.min(2_000)];
    let redb_commit = per_sec(stored.len(), runs, |run| {
        let db =
            redb::Database::create(tmp_redb.path().join(format!("r{run}.redb"))).expect("redb");
        for e in stored {
            let tx = db.begin_write().expect("tx");
            tx.open_table(TABLE)
                .expect("table")
                .insert(e.id.to_hex().as_str(), 1)
                .expect("insert");
            tx.commit().expect("commit");
        }
    });
    let check = per_sec(n, runs, |_| {
        for e in events {
            assert!(release::check_release(e, &policy, now).is_ok());
        }
    });
    let tmp = tempfile::tempdir()?;
    let ingest = per_sec(stored.len(), runs, |run| {
        let catalog =
            Catalog::open(&tmp.path().join(format!("catalog{run}.redb"))).expect("catalog");
        for e in stored {
            catalog.ingest(e, &policy, now).expect("ingest");
        }
    });
    // A sync pass: the whole batch through `ingest_all` (one commit per 1 000 events).
    let ingest_all = per_sec(n, runs, |run| {
        let catalog = Catalog::open(&tmp.path().join(format!("batch{run}.redb"))).expect("catalog");
        catalog
            .ingest_all(events.to_vec(), &policy, now)
            .expect("ingest_all");
    });
    println!("verification of {n} releases, median of {runs} (events/s, context only):");
    println!(
        "  Event::verify {schnorr:.0} | Ed25519 verify {ed25519:.0} | both per release {raw:.0}"
    );
    println!(
        "  envelope parse {parse_only:.0} | JWS verify_signature {jws_only:.0} | envelope::verify (JWS + schema + policy) {envelope_verify:.0}"
    );
    println!(
        "  pieces: did:key decode {did_decode:.0} | JCS of the manifest {jcs_only:.0} | Ed25519 verify_strict {ed25519_strict:.0} | manifest::validate (schema + policy) {validate_only:.0}"
    );
    println!(
        "  check_release {check:.0} | Catalog::ingest (one event per commit, a live event) {ingest:.0} | Catalog::ingest_all (a sync pass) {ingest_all:.0} | redb commit of one insert {redb_commit:.0}"
    );
    println!(
        "RATIO verify.check_release/raw_sigs {:.2}  catalog_ingest/raw_sigs {:.2}  catalog_ingest_all/raw_sigs {:.2}",
        check / raw,
        ingest / raw,
        ingest_all / raw
    );
    Ok(())
}

async fn discovery_from(
    name: &str,
    url: &str,
    events: &[Event],
    runs: usize,
    now: u64,
) -> anyhow::Result<()> {
    let pool = RelayPool::connect([url], PoolConfig::default()).await?;
    let t = Instant::now();
    for chunk in events.chunks(256) {
        let sends = chunk.iter().map(|e| pool.publish(e));
        for r in futures::future::join_all(sends).await {
            r?;
        }
    }
    let publish_secs = t.elapsed().as_secs_f64();
    let policy = PolicyConfig::default();
    let tmp = tempfile::tempdir()?;
    let mut fetch = Vec::new();
    let mut sync = Vec::new();
    let mut accepted = 0;
    let mut received = 0;
    for run in 0..=runs {
        let t = Instant::now();
        let got = pool.fetch(release_filter(), None).await?.len();
        let fetch_secs = t.elapsed().as_secs_f64();
        if run == 0 {
            // Warm-up: the relay's store and the connection, without a catalog pass (a full
            // pass is fsync-bound and takes tens of seconds at 10,000 releases).
            continue;
        }
        let catalog = Catalog::open(&tmp.path().join(format!("c{run}.redb")))?;
        let t = Instant::now();
        let report = discovery::sync_once(&pool, &catalog, &policy, now).await?;
        let sync_secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            got == report.received,
            "fetch saw {got}, sync {}",
            report.received
        );
        accepted = report.accepted;
        received = report.received;
        fetch.push(fetch_secs);
        sync.push(sync_secs);
    }
    let (fetch, sync) = (median(fetch), median(sync));
    println!(
        "discovery {name}: published {} in {publish_secs:.2} s; fetch alone {fetch:.2} s; sync_once (fetch + verify + catalog) {sync:.2} s; received {received}, accepted {accepted}",
        events.len()
    );
    println!(
        "RATIO discovery.{name} fetch/sync_once {:.2} (sync_once / fetch {:.2}x)",
        fetch / sync,
        sync / fetch
    );
    pool.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10_000);
    let sync_n = args.get(1).copied().unwrap_or(10_000);
    let runs = args.get(2).copied().unwrap_or(3);
    let sync_runs = args.get(3).copied().unwrap_or(1).max(1);
    // Releases spread over the 20 relays (publishing 3 copies each to nostr-rs-relay is slow).
    let many_n = args
        .get(4)
        .copied()
        .unwrap_or(sync_n.min(10_000))
        .min(sync_n);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let t = Instant::now();
    let events = releases(n.max(sync_n), now);
    println!(
        "built and signed {} releases in {:.2?}",
        events.len(),
        t.elapsed()
    );

    verification(&events[..n], runs, now)?;
    println!("PEAK verify VmHWM {}", vm_hwm());

    if sync_n > 0 {
        let relay = EmbeddedRelay::start(EmbeddedRelayConfig {
            notes_per_minute: u32::MAX,
            ..EmbeddedRelayConfig::default()
        })
        .await?;
        discovery_from(
            "embedded",
            relay.url().as_str(),
            &events[..sync_n],
            sync_runs,
            now,
        )
        .await?;
        relay.shutdown().await;
        match NostrRsRelay::start().await {
            Ok(relay) => {
                discovery_from(
                    "nostr-rs-relay",
                    relay.url().as_str(),
                    &events[..sync_n],
                    sync_runs,
                    now,
                )
                .await?
            }
            Err(e) => println!("discovery nostr-rs-relay skipped: {e}"),
        }
        println!("PEAK discovery VmHWM {}", vm_hwm());
        if let Err(e) = many_relays(&events[..many_n], 20, 3, now).await {
            println!("discovery from 20 relays skipped: {e}");
        }
        println!("PEAK many-relays VmHWM {}", vm_hwm());
    }
    Ok(())
}

/// Publishes every event to the relays `relays[(i + k·7) % n]`, k < copies.
async fn spread(pools: &[RelayPool], events: &[Event], copies: usize) -> anyhow::Result<()> {
    for (c, chunk) in events.chunks(256).enumerate() {
        let sends = chunk.iter().enumerate().flat_map(|(j, e)| {
            let i = c * 256 + j;
            (0..copies)
                .map(move |k| (i + k * 7) % pools.len())
                .map(move |r| (r, e))
        });
        let sends = sends.map(|(r, e)| pools[r].publish(e));
        for r in futures::future::join_all(sends).await {
            r?;
        }
    }
    Ok(())
}

async fn many_relays(events: &[Event], n: usize, copies: usize, now: u64) -> anyhow::Result<()> {
    let mut relays = Vec::new();
    for _ in 0..n {
        relays.push(NostrRsRelay::start().await?);
    }
    let union = NostrRsRelay::start().await?;
    let urls: Vec<String> = relays.iter().map(|r| r.url().to_string()).collect();
    let mut pools = Vec::new();
    for u in &urls {
        pools.push(RelayPool::connect([u.as_str()], PoolConfig::default()).await?);
    }
    let t = Instant::now();
    spread(&pools, events, copies).await?;
    let union_pool = RelayPool::connect([union.url().as_str()], PoolConfig::default()).await?;
    spread(std::slice::from_ref(&union_pool), events, 1).await?;
    println!(
        "many relays: {} releases, each on {copies} of {n} nostr-rs-relay processes ({} copies), \
         and all on one more; published in {:.1} s",
        events.len(),
        events.len() * copies,
        t.elapsed().as_secs_f64()
    );
    let pool = RelayPool::connect(urls.iter().map(String::as_str), PoolConfig::default()).await?;
    let policy = PolicyConfig::default();
    let tmp = tempfile::tempdir()?;
    // Warm-up: each relay's store and connection.
    pool.fetch(release_filter(), None).await?;
    union_pool.fetch(release_filter(), None).await?;
    let t = Instant::now();
    let fetched = pool.fetch(release_filter(), None).await?.len();
    let fetch_many = t.elapsed().as_secs_f64();
    let catalog = Catalog::open(&tmp.path().join("many.redb"))?;
    let t = Instant::now();
    let report = discovery::sync_once(&pool, &catalog, &policy, now).await?;
    let sync_many = t.elapsed().as_secs_f64();
    let returned: usize = report
        .relays
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .sum();
    anyhow::ensure!(
        report.verified == events.len() as u64 && fetched == events.len(),
        "verified {} of {} (fetched {fetched})",
        report.verified,
        events.len()
    );
    let t = Instant::now();
    let fetched_union = union_pool.fetch(release_filter(), None).await?.len();
    let fetch_union = t.elapsed().as_secs_f64();
    let catalog = Catalog::open(&tmp.path().join("union.redb"))?;
    let t = Instant::now();
    let one = discovery::sync_once(&union_pool, &catalog, &policy, now).await?;
    let sync_union = t.elapsed().as_secs_f64();
    anyhow::ensure!(fetched_union == events.len() && one.verified == events.len() as u64);
    println!(
        "many relays: the relays returned {returned} copies; {} distinct received, {} release \
         checks run (each event verified once), {} accepted",
        report.received, report.verified, report.accepted
    );
    println!(
        "many relays: fetch from {n} relays {fetch_many:.2} s, sync_once {sync_many:.2} s; one \
         relay with the union: fetch {fetch_union:.2} s, sync_once {sync_union:.2} s"
    );
    println!(
        "RATIO discovery.{n}-relays sync_once {n} relays / union {:.2} (fetch {:.2})",
        sync_many / sync_union,
        fetch_many / fetch_union
    );
    pool.shutdown().await;
    union_pool.shutdown().await;
    for p in pools {
        p.shutdown().await;
    }
    Ok(())
}
