//! The store-anything test relay accepts an event with a bad signature and serves it back
//! through the pool (fetch and live subscription), unverified, so the node's own checks run.

mod common;

use archy_relays::nostr::prelude::*;
use archy_relays::testing::StoreAnythingRelay;
use archy_relays::{RelayOutcome, RelayPool, StreamItem};
use common::*;

fn tampered(keys: &Keys) -> (Event, Event) {
    let good = release(keys, "archy:app:evil@1.0.0", T0, "original");
    let mut json: serde_json::Value = serde_json::from_str(&good.as_json()).unwrap();
    json["content"] = "tampered after signing".into();
    (good, Event::from_json(json.to_string()).unwrap())
}

fn forged_sig(keys: &Keys) -> Event {
    // Valid id, signature by another key.
    let good = release(keys, "archy:app:evil@2.0.0", T0 + 1, "{}");
    let other = release(&Keys::generate(), "archy:app:evil@2.0.0", T0 + 1, "{}");
    let mut json: serde_json::Value = serde_json::from_str(&good.as_json()).unwrap();
    json["sig"] = serde_json::to_value(other.sig).unwrap();
    Event::from_json(json.to_string()).unwrap()
}

#[tokio::test]
async fn store_anything_relay_serves_bad_signatures() {
    let relay = StoreAnythingRelay::start().await.unwrap();
    let pool = RelayPool::connect([relay.url().as_str()], test_config(1))
        .await
        .unwrap();
    let keys = Keys::generate();
    let (_, bad_content) = tampered(&keys);
    let bad_sig = forged_sig(&keys);
    assert!(bad_content.verify().is_err());
    assert!(bad_sig.verify_id());
    assert!(!bad_sig.verify_signature());

    let mut sub = pool.subscribe(app_filter(), None);
    assert!(matches!(
        next_item(&mut sub).await,
        StreamItem::CaughtUp { .. }
    ));

    for ev in [&bad_content, &bad_sig] {
        let report = pool.publish(ev).await.unwrap();
        assert_eq!(report.per_relay[0].1, RelayOutcome::Accepted);
    }
    assert_eq!(relay.stored().len(), 2);

    // One-pass fetch hands them over as stored (the node verifies and rejects them).
    let got = pool.fetch(app_filter(), None).await.unwrap();
    let ids: Vec<EventId> = got.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![bad_content.id, bad_sig.id]);
    assert_eq!(got[0].content, "tampered after signing");
    assert!(got.iter().all(|e| e.verify().is_err()));

    // The live subscription delivered them too.
    let mut live = Vec::new();
    while live.len() < 2 {
        if let StreamItem::Event { event, .. } = next_item(&mut sub).await {
            assert!(event.verify().is_err());
            live.push(event.id);
        }
    }
    assert_eq!(live, vec![bad_content.id, bad_sig.id]);

    // A pool told to drop invalid events does not hand them over.
    let mut strict = test_config(1);
    strict.drop_invalid_events = true;
    let strict = RelayPool::connect([relay.url().as_str()], strict)
        .await
        .unwrap();
    let good = release(&keys, "archy:app:fine@1.0.0", T0 + 5, "{}");
    strict.publish(&good).await.unwrap();
    let got = strict.fetch(app_filter(), None).await.unwrap();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![good.id]);

    drop(sub);
    pool.shutdown().await;
    strict.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test]
async fn store_anything_relay_insert_raw_and_filters() {
    let relay = StoreAnythingRelay::start().await.unwrap();
    let keys = Keys::generate();
    let (_, bad) = tampered(&keys);
    relay.insert_raw(serde_json::from_str(&bad.as_json()).unwrap());
    let unrelated = EventBuilder::text_note("hi")
        .custom_created_at(Timestamp::from_secs(T0))
        .sign_with_keys(&keys)
        .unwrap();
    relay.insert_raw(serde_json::from_str(&unrelated.as_json()).unwrap());
    let pool = RelayPool::connect([relay.url().as_str()], test_config(1))
        .await
        .unwrap();
    let got = pool.fetch(app_filter(), None).await.unwrap();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![bad.id]);
    let by_author = pool
        .fetch(Filter::new().author(keys.public_key()), None)
        .await
        .unwrap();
    assert_eq!(by_author.len(), 2);
    pool.shutdown().await;
    relay.shutdown().await;
}

/// A relay that sends one message over the reader's 4 MiB cap: the reader refuses it instead of
/// buffering it (that relay's fetch fails and says why), and the other relay's events arrive.
#[tokio::test]
async fn a_message_over_the_cap_is_refused_and_other_relays_still_serve() {
    let hostile = StoreAnythingRelay::start().await.unwrap();
    let honest = StoreAnythingRelay::start().await.unwrap();
    let keys = Keys::generate();
    let huge = release(&keys, "archy:app:huge@1.0.0", T0, &"x".repeat(5 << 20));
    let small = release(&keys, "archy:app:small@1.0.0", T0 + 1, "{}");
    hostile.insert_raw(serde_json::from_str(&huge.as_json()).unwrap());
    honest.insert_raw(serde_json::from_str(&small.as_json()).unwrap());
    let pool = RelayPool::connect(
        [hostile.url().as_str(), honest.url().as_str()],
        test_config(1),
    )
    .await
    .unwrap();
    let report = pool.fetch_report(app_filter(), None).await.unwrap();
    let ids: Vec<EventId> = report.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![small.id], "{:?}", report.per_relay);
    let hostile_result = report
        .per_relay
        .iter()
        .find(|(url, _)| url == &hostile.url())
        .map(|(_, r)| r.clone())
        .unwrap();
    let err = hostile_result.expect_err("the oversized message is refused");
    assert!(err.contains("too long") || err.contains("size"), "{err}");
    pool.shutdown().await;
}

/// Censorship by a forged duplicate (issue 13): a hostile relay listed FIRST serves copies of a
/// genuine event under its id (other content; a garbage signature). The pool hands the copies
/// over (the node records them as `event-invalid`) and the genuine event from the honest relay
/// too, in the one-pass fetch and in the live subscription: no copy takes its place.
#[tokio::test]
async fn a_forged_copy_under_a_genuine_id_does_not_hide_the_genuine_event() {
    let hostile = StoreAnythingRelay::start().await.unwrap();
    let honest = StoreAnythingRelay::start().await.unwrap();
    let keys = Keys::generate();
    let forged = |genuine: &Event, field: &str, value: serde_json::Value| {
        let mut json: serde_json::Value = serde_json::from_str(&genuine.as_json()).unwrap();
        json[field] = value;
        json
    };
    let genuine = release(&keys, "archy:app:censored@1.0.0", T0, "genuine");
    let copies = [
        forged(&genuine, "content", "forged".into()),
        forged(&genuine, "sig", "00".repeat(64).into()),
    ];
    for copy in &copies {
        assert_eq!(copy["id"], genuine.id.to_hex());
        hostile.insert_raw(copy.clone());
    }
    honest.insert_raw(serde_json::from_str(&genuine.as_json()).unwrap());
    let pool = RelayPool::connect(
        [hostile.url().as_str(), honest.url().as_str()],
        test_config(1),
    )
    .await
    .unwrap();

    // One pass: both copies and the genuine event, the hostile relay's first (its order).
    let report = pool.fetch_report(app_filter(), None).await.unwrap();
    assert_eq!(report.events.len(), 3, "{:?}", report.per_relay);
    assert!(report.events.iter().all(|e| e.id == genuine.id));
    assert_eq!(report.events.iter().filter(|e| **e == genuine).count(), 1);
    assert!(report.events[..2].iter().all(|e| e.verify().is_err()));

    // Live: stored copies first from the hostile relay, then the genuine event still arrives;
    // and a fresh genuine event published later behind another forged copy arrives too.
    let mut sub = pool.subscribe(app_filter(), None);
    let mut stored = Vec::new();
    let mut caught_up = 0;
    while caught_up < 2 {
        match next_item(&mut sub).await {
            StreamItem::Event { event, .. } => stored.push(*event),
            StreamItem::CaughtUp { .. } => caught_up += 1,
            StreamItem::Disconnected { error, .. } => panic!("{error}"),
        }
    }
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!(stored.iter().filter(|e| **e == genuine).count(), 1);
    let later = release(&keys, "archy:app:censored@2.0.0", T0 + 1, "later");
    hostile.insert_raw(forged(&later, "content", "forged".into()));
    let forged_later = loop {
        if let StreamItem::Event { event, .. } = next_item(&mut sub).await {
            break event;
        }
    };
    assert_eq!(forged_later.id, later.id);
    assert!(!forged_later.verify_id());
    honest.insert_raw(serde_json::from_str(&later.as_json()).unwrap());
    let delivered = loop {
        if let StreamItem::Event { event, .. } = next_item(&mut sub).await {
            break event;
        }
    };
    assert_eq!(*delivered, later, "the genuine event behind a forged copy");
    drop(sub);
    pool.shutdown().await;
    hostile.shutdown().await;
    honest.shutdown().await;
}
