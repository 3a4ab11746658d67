//! Two relays, quorum 1: one stops, publishing goes on and the report names the failed relay;
//! it comes back, fetches see both again without duplicates. Live subscriptions survive a
//! relay restart and resume from the last seen `created_at`.

mod common;

use std::collections::HashSet;

use archy_relays::nostr::prelude::*;
use archy_relays::{
    EmbeddedRelay, EmbeddedRelayConfig, RelayError, RelayOutcome, RelayPool, StreamItem,
};
use common::*;

async fn persistent_relay(dir: &std::path::Path) -> EmbeddedRelay {
    EmbeddedRelay::start(EmbeddedRelayConfig {
        db_dir: Some(dir.to_path_buf()),
        ..EmbeddedRelayConfig::default()
    })
    .await
    .unwrap()
}

async fn restart(dir: &std::path::Path, addr: std::net::SocketAddr) -> EmbeddedRelay {
    EmbeddedRelay::start(EmbeddedRelayConfig {
        bind: addr,
        db_dir: Some(dir.to_path_buf()),
        ..EmbeddedRelayConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn quorum_one_survives_a_stopped_relay_and_resyncs() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let a = persistent_relay(dir_a.path()).await;
    let b = persistent_relay(dir_b.path()).await;
    let (url_a, url_b, addr_b) = (a.url(), b.url(), b.local_addr());

    let pool = RelayPool::connect([url_a.as_str(), url_b.as_str()], test_config(1))
        .await
        .unwrap();
    let strict = RelayPool::connect([url_a.as_str(), url_b.as_str()], test_config(2))
        .await
        .unwrap();
    let keys = Keys::generate();
    let e1 = release(&keys, "archy:app:q@1.0.0", T0 + 1, "{}");
    let e2 = release(&keys, "archy:app:q@1.1.0", T0 + 2, "{}");
    let e3 = release(&keys, "archy:app:q@1.2.0", T0 + 3, "{}");

    let r1 = pool.publish(&e1).await.unwrap();
    assert_eq!(r1.accepted, 2, "{r1:?}");

    // Stop B.
    b.shutdown().await;
    wait_connected(&pool, &url_b, false).await;
    wait_connected(&strict, &url_b, false).await;
    let health = pool.health().await;
    let hb = health.iter().find(|h| h.url == url_b).unwrap();
    assert!(
        hb.last_error.is_some(),
        "a stopped relay reports why: {hb:?}"
    );

    // Quorum 1: still succeeds, and the report says which relay failed.
    let r2 = pool.publish(&e2).await.unwrap();
    assert!(r2.quorum_met);
    assert_eq!(r2.accepted, 1);
    let outcome = |r: &archy_relays::PublishReport, u: &RelayUrl| {
        r.per_relay.iter().find(|(x, _)| x == u).unwrap().1.clone()
    };
    assert_eq!(outcome(&r2, &url_a), RelayOutcome::Accepted);
    assert!(
        matches!(outcome(&r2, &url_b), RelayOutcome::Failed(_)),
        "{r2:?}"
    );

    // Quorum 2: the same situation is an error that still carries the report.
    match strict.publish(&e2).await {
        Err(RelayError::QuorumNotMet(report)) => {
            assert_eq!(report.accepted, 1);
            assert!(matches!(outcome(&report, &url_b), RelayOutcome::Failed(_)));
        }
        other => panic!("expected QuorumNotMet, got {other:?}"),
    }

    // Fetch tolerates the dead relay.
    let report = pool.fetch_report(app_filter(), None).await.unwrap();
    assert_eq!(report.events.len(), 2);
    assert!(report
        .per_relay
        .iter()
        .any(|(u, r)| u == &url_b && r.is_err()));

    // Bring B back on the same address with its data.
    let b = restart(dir_b.path(), addr_b).await;
    assert_eq!(b.url(), url_b);
    wait_connected(&pool, &url_b, true).await;
    let r3 = pool.publish(&e3).await.unwrap();
    assert_eq!(r3.accepted, 2, "{r3:?}");

    let report = pool.fetch_report(app_filter(), None).await.unwrap();
    let counts: Vec<(RelayUrl, usize)> = report
        .per_relay
        .iter()
        .map(|(u, r)| (u.clone(), *r.as_ref().unwrap()))
        .collect();
    assert!(counts.contains(&(url_a.clone(), 3)), "{counts:?}");
    assert!(
        counts.contains(&(url_b.clone(), 2)),
        "B missed e2 while down: {counts:?}"
    );
    let ids: Vec<EventId> = report.events.iter().map(|e| e.id).collect();
    assert_eq!(
        ids,
        vec![e1.id, e2.id, e3.id],
        "deduplicated, in created_at order"
    );

    pool.shutdown().await;
    strict.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn subscription_resumes_after_relay_restart() {
    let dir = tempfile::tempdir().unwrap();
    let relay = persistent_relay(dir.path()).await;
    let (url, addr) = (relay.url(), relay.local_addr());
    let publisher = RelayPool::connect([url.as_str()], test_config(1))
        .await
        .unwrap();
    let subscriber = RelayPool::connect([url.as_str()], test_config(1))
        .await
        .unwrap();
    let keys = Keys::generate();

    let e1 = release(&keys, "archy:app:s@1.0.0", T0 + 100, "{}");
    publisher.publish(&e1).await.unwrap();

    let mut sub = subscriber.subscribe(app_filter(), None);
    match next_item(&mut sub).await {
        StreamItem::Event { relay, event } => {
            assert_eq!(relay, url);
            assert_eq!(event.id, e1.id);
        }
        other => panic!("expected e1, got {other:?}"),
    }
    assert!(matches!(
        next_item(&mut sub).await,
        StreamItem::CaughtUp { .. }
    ));

    // Live delivery.
    let e2 = release(&keys, "archy:app:s@1.1.0", T0 + 200, "{}");
    publisher.publish(&e2).await.unwrap();
    match next_item(&mut sub).await {
        StreamItem::Event { event, .. } => assert_eq!(event.id, e2.id),
        other => panic!("expected e2, got {other:?}"),
    }
    assert_eq!(sub.resume_point(), Some(Timestamp::from_secs(T0 + 200)));

    // The relay goes away: the subscription says so and keeps retrying.
    relay.shutdown().await;
    match next_item(&mut sub).await {
        StreamItem::Disconnected { relay, error } => {
            assert_eq!(relay, url);
            assert!(!error.is_empty());
        }
        other => panic!("expected a disconnect notice, got {other:?}"),
    }

    // Back on the same address with its data; a new event arrives meanwhile.
    let relay = restart(dir.path(), addr).await;
    wait_connected(&publisher, &url, true).await;
    let e3 = release(&keys, "archy:app:s@1.2.0", T0 + 300, "{}");
    // Dated before the resume point: a resumed REQ (since = T0+200) does not ask for it; a
    // subscription that restarted from scratch would deliver it.
    let backdated = release(&keys, "archy:app:s@0.9.0", T0 + 150, "{}");
    publisher.publish(&backdated).await.unwrap();
    publisher.publish(&e3).await.unwrap();

    // The subscription re-establishes itself, resumes from T0+200 and delivers e3 exactly once;
    // e1, e2 and the backdated event are not delivered.
    // (The relay's stream is in order: a re-delivered e1/e2 would come before e3.)
    let mut delivered = Vec::new();
    while !delivered.contains(&e3.id) {
        match next_item(&mut sub).await {
            StreamItem::Event { event, .. } => delivered.push(event.id),
            StreamItem::CaughtUp { .. } => {}
            StreamItem::Disconnected { .. } => {} // retries before the relay was back
        }
    }
    assert_eq!(delivered, vec![e3.id]);
    assert_eq!(sub.resume_point(), Some(Timestamp::from_secs(T0 + 300)));

    // And live events keep flowing after the resume.
    let e4 = release(&keys, "archy:app:s@1.3.0", T0 + 400, "{}");
    publisher.publish(&e4).await.unwrap();
    match next_item(&mut sub).await {
        StreamItem::Event { event, .. } => assert_eq!(event.id, e4.id),
        other => panic!("expected e4, got {other:?}"),
    }
    drop(sub);
    publisher.shutdown().await;
    subscriber.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn subscription_deduplicates_across_relays() {
    let a = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let b = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let pool = RelayPool::connect([a.url().as_str(), b.url().as_str()], test_config(2))
        .await
        .unwrap();
    let keys = Keys::generate();
    let mut sub = pool.subscribe(app_filter(), None);
    // Both relays caught up (empty) before publishing, so both will carry the live event.
    let mut caught_up = HashSet::new();
    while caught_up.len() < 2 {
        if let StreamItem::CaughtUp { relay } = next_item(&mut sub).await {
            caught_up.insert(relay);
        }
    }
    let e1 = release(&keys, "archy:app:d@1.0.0", T0, "{}");
    let e2 = release(&keys, "archy:app:d@2.0.0", T0 + 1, "{}");
    assert_eq!(pool.publish(&e1).await.unwrap().accepted, 2);
    assert_eq!(pool.publish(&e2).await.unwrap().accepted, 2);
    // Sentinels sent to ONE relay each: each relay's stream is in order, so once both
    // sentinels are in, any duplicate of e1/e2 would have been delivered before them.
    let only_a = RelayPool::connect([a.url().as_str()], test_config(1))
        .await
        .unwrap();
    let only_b = RelayPool::connect([b.url().as_str()], test_config(1))
        .await
        .unwrap();
    let s_a = release(&keys, "archy:app:d@9.0.0", T0 + 2, "{}");
    let s_b = release(&keys, "archy:app:d@9.1.0", T0 + 3, "{}");
    only_a.publish(&s_a).await.unwrap();
    only_b.publish(&s_b).await.unwrap();
    let mut delivered = Vec::new();
    while !(delivered.contains(&s_a.id) && delivered.contains(&s_b.id)) {
        let (_, ev) = tokio::time::timeout(SAFETY, sub.next_event())
            .await
            .unwrap()
            .unwrap();
        delivered.push(ev.id);
    }
    delivered.sort();
    let mut want = vec![e1.id, e2.id, s_a.id, s_b.id];
    want.sort();
    assert_eq!(delivered, want, "each event exactly once");
    only_a.shutdown().await;
    only_b.shutdown().await;
    drop(sub);
    pool.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}
