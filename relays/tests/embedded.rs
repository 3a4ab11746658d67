//! The embedded relay over real WebSockets: publish + fetch, persistence across a restart,
//! addressable-event replacement, public reads of kind 30078, health.

mod common;

use archy_relays::nostr::prelude::*;
use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig, RelayOutcome, RelayPool};
use common::*;

#[tokio::test]
async fn publish_then_fetch_through_embedded_relay() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    assert!(relay.url().as_str().starts_with("ws://127.0.0.1:"));
    assert_ne!(relay.local_addr().port(), 0);

    let pool = RelayPool::connect([relay.url().as_str()], test_config(1))
        .await
        .unwrap();
    let keys = Keys::generate();
    let ev = release(&keys, "archy:app:hello@1.0.0", T0, "{}");
    let report = pool.publish(&ev).await.unwrap();
    assert!(report.quorum_met);
    assert_eq!(report.accepted, 1);
    assert_eq!(
        report.per_relay,
        vec![(relay.url(), RelayOutcome::Accepted)]
    );

    // A second client without any AUTH reads kind 30078 back (served publicly).
    let reader = RelayPool::connect([relay.url().as_str()], test_config(1))
        .await
        .unwrap();
    let got = reader.fetch(app_filter(), None).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ev.id);
    assert!(got[0].verify().is_ok());

    // `since` narrows the pass.
    let none = reader
        .fetch(app_filter(), Some(Timestamp::from_secs(T0 + 1)))
        .await
        .unwrap();
    assert!(none.is_empty());

    let health = reader.health().await;
    assert_eq!(health.len(), 1);
    assert!(health[0].connected, "{health:?}");
    assert!(health[0].rtt_ms.is_some(), "{health:?}");

    pool.shutdown().await;
    reader.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedRelayConfig {
        db_dir: Some(dir.path().join("relay")),
        ..EmbeddedRelayConfig::default()
    };
    let relay = EmbeddedRelay::start(config.clone()).await.unwrap();
    let addr = relay.local_addr();
    let url = relay.url();

    let keys = Keys::generate();
    let events: Vec<Event> = (0..3)
        .map(|i| release(&keys, &format!("archy:app:app{i}@1.0.0"), T0 + i, "{}"))
        .collect();
    let pool = RelayPool::connect([url.as_str()], test_config(1))
        .await
        .unwrap();
    for ev in &events {
        pool.publish(ev).await.unwrap();
    }
    pool.shutdown().await;
    relay.shutdown().await;

    // Same directory, same port: same URL, same events.
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig {
        bind: addr,
        ..config
    })
    .await
    .unwrap();
    assert_eq!(relay.url(), url);
    let pool = RelayPool::connect([url.as_str()], test_config(1))
        .await
        .unwrap();
    let got = pool.fetch(app_filter(), None).await.unwrap();
    let mut got_ids: Vec<EventId> = got.iter().map(|e| e.id).collect();
    let mut want: Vec<EventId> = events.iter().map(|e| e.id).collect();
    got_ids.sort();
    want.sort();
    assert_eq!(got_ids, want);
    pool.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn addressable_keeps_newest_per_d_and_separates_d_values() {
    let dir = tempfile::tempdir().unwrap();
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig {
        db_dir: Some(dir.path().to_path_buf()),
        ..EmbeddedRelayConfig::default()
    })
    .await
    .unwrap();
    let pool = RelayPool::connect([relay.url().as_str()], test_config(1))
        .await
        .unwrap();
    let keys = Keys::generate();
    let other = Keys::generate();

    let v1_old = release(&keys, "archy:app:x@1.0.0", T0 + 10, "first");
    let v1_new = release(&keys, "archy:app:x@1.0.0", T0 + 20, "second");
    let v1_stale = release(&keys, "archy:app:x@1.0.0", T0 + 5, "stale");
    let v2 = release(&keys, "archy:app:x@2.0.0", T0 + 15, "v2");
    let other_v1 = release(&other, "archy:app:x@1.0.0", T0 + 1, "other key");

    pool.publish(&v1_old).await.unwrap();
    pool.publish(&v1_new).await.unwrap();
    // An older event for the same (pubkey, kind, d) must not replace the newer one; whether
    // the relay says OK or not, it must not be served.
    let _ = pool.publish(&v1_stale).await;
    pool.publish(&v2).await.unwrap();
    pool.publish(&other_v1).await.unwrap();

    let got = pool.fetch(app_filter(), None).await.unwrap();
    let contents: Vec<&str> = got.iter().map(|e| e.content.as_str()).collect();
    assert_eq!(got.len(), 3, "{contents:?}");
    assert!(
        got.iter().any(|e| e.id == v1_new.id),
        "newest of x@1.0.0 kept: {contents:?}"
    );
    assert!(
        got.iter().any(|e| e.id == v2.id),
        "x@2.0.0 kept apart: {contents:?}"
    );
    assert!(
        got.iter().any(|e| e.id == other_v1.id),
        "another pubkey's d kept apart: {contents:?}"
    );
    assert!(!got.iter().any(|e| e.id == v1_old.id || e.id == v1_stale.id));

    // Same through a filter on the d tag.
    let by_d = pool
        .fetch(
            app_filter()
                .author(keys.public_key())
                .identifier("archy:app:x@1.0.0"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        by_d.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![v1_new.id]
    );
    pool.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn fetch_pages_past_the_relay_default_limit() {
    // A relay that returns at most 7 events per REQ without a limit, and a pool that asks for
    // pages of 5: the fetch must still collect everything.
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig {
        default_filter_limit: 7,
        ..EmbeddedRelayConfig::default()
    })
    .await
    .unwrap();
    let mut config = test_config(1);
    config.page_size = 5;
    let pool = RelayPool::connect([relay.url().as_str()], config)
        .await
        .unwrap();
    let keys = Keys::generate();
    let mut ids = Vec::new();
    for i in 0..23u64 {
        // Several events share a second, so paging by `until` must not lose them.
        let ev = release(&keys, &format!("archy:app:p{i}@1.0.0"), T0 + i / 3, "{}");
        ids.push(ev.id);
        pool.publish(&ev).await.unwrap();
    }
    let got = pool.fetch(app_filter(), None).await.unwrap();
    let mut got_ids: Vec<EventId> = got.iter().map(|e| e.id).collect();
    got_ids.sort();
    ids.sort();
    assert_eq!(got_ids, ids);
    // Returned in (created_at, id) order.
    assert!(got
        .windows(2)
        .all(|w| (w[0].created_at, w[0].id) <= (w[1].created_at, w[1].id)));
    pool.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn embedded_relay_refuses_bad_signature() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let pool = RelayPool::connect([relay.url().as_str()], test_config(1))
        .await
        .unwrap();
    let keys = Keys::generate();
    let good = release(&keys, "archy:app:y@1.0.0", T0, "original");
    let mut json: serde_json::Value = serde_json::from_str(&good.as_json()).unwrap();
    json["content"] = "tampered".into();
    let bad = Event::from_json(json.to_string()).unwrap();
    let err = pool.publish(&bad).await.unwrap_err();
    let archy_relays::RelayError::QuorumNotMet(report) = err else {
        panic!("expected QuorumNotMet, got {err}");
    };
    assert!(
        matches!(&report.per_relay[0].1, RelayOutcome::Refused(m) if m.starts_with("invalid")),
        "{report:?}"
    );
    assert!(pool.fetch(app_filter(), None).await.unwrap().is_empty());
    pool.shutdown().await;
    relay.shutdown().await;
}
