//! PROTOCOL §5.3 (v2): one blob from several sources at once, over real iroh endpoints on
//! loopback. The sequential rules that finish what a spread leaves are in `fetch.rs`.

mod common;

use std::{sync::Arc, time::Duration};

use archy_swarm::{FetchEvent, FetchRequest, Swarm, SwarmConfig, UploadLimits};
use common::*;
use tokio::{sync::mpsc, time::timeout};

const MIB: usize = 1024 * 1024;

/// A piece re-asked after a failed request may be sent twice in part.
const RETRY_SLACK: u64 = 4 * MIB as u64;

async fn capped(dir: &std::path::Path, limits: UploadLimits) -> Swarm {
    Swarm::open(SwarmConfig::local(dir, "127.0.0.1:0".parse().unwrap()).with_uploads(limits))
        .await
        .expect("open a capped node")
}

fn request(hash: &str, size: u64) -> FetchRequest {
    let mut r = FetchRequest::new(hash, size);
    r.stall_timeout = Duration::from_secs(5);
    r
}

async fn exported(node: &Swarm, hash: &str, dir: &std::path::Path) -> Vec<u8> {
    let out = dir.join(format!("{}.bin", node.endpoint_id()));
    node.export(hash, &out).await.unwrap();
    std::fs::read(out).unwrap()
}

/// Two sources, each with an upload cap standing in for a home uplink, share one blob: both
/// send pieces, no byte comes twice beyond a retry, and the blob verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_capped_sources_share_one_blob_and_every_byte_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("spread-two", 6 * MIB + 4321);
    let cap = UploadLimits {
        max_uploads: Some(8),
        rate: Some(4 * MIB as u64),
    };
    let origin = capped(&tmp.path().join("origin"), cap).await;
    let mirror = capped(&tmp.path().join("mirror"), cap).await;
    let client = node(&tmp.path().join("client")).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    mirror.add_bytes(content.clone()).await.unwrap();

    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    req.peers = vec![mirror.addr()];
    let (tx, mut rx) = mpsc::channel(64 * 1024);
    let report = timeout(SAFETY, client.fetch(req.clone(), Some(tx)))
        .await
        .unwrap()
        .unwrap();
    eprintln!("two sources: {report:?}");
    let from_origin = report.bytes_from(&origin.endpoint_id());
    let from_mirror = report.bytes_from(&mirror.endpoint_id());
    assert!(from_origin > 0, "the origin sent pieces: {report:?}");
    assert!(from_mirror > 0, "the mirror sent pieces: {report:?}");
    assert!(from_origin + from_mirror >= blob.size, "{report:?}");
    assert!(
        from_origin + from_mirror <= blob.size + RETRY_SLACK,
        "{report:?}"
    );
    assert!(report.failures.is_empty() && report.bad_sources.is_empty());
    assert!(report.completed_by.is_some());
    // The caller saw progress from both sources, as it happened.
    let mut sources = std::collections::BTreeSet::new();
    let mut last_have = 0;
    while let Ok(ev) = rx.try_recv() {
        if let FetchEvent::Progress(p) = ev {
            sources.insert(p.source);
            last_have = p.have;
        }
    }
    assert_eq!(sources.len(), 2, "{sources:?}");
    assert_eq!(last_have, blob.size);
    assert!(exported(&client, &blob.hash, tmp.path()).await == content);

    // Fetching again moves nothing.
    let again = client.fetch(req, None).await.unwrap();
    assert!(again.already_local && again.transferred() == 0);
    for n in [&origin, &mirror, &client] {
        n.shutdown().await.unwrap();
    }
}

/// A hostile peer in a spread fetch is dropped at its first bad chunk group and named; the
/// origin finishes, and nothing unverified is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_in_a_spread_is_dropped_and_the_fetch_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("spread-hostile", 8 * MIB + 17);
    let origin = node(&tmp.path().join("origin")).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    let (bad_router, bad) = hostile(&content, 0).await;
    let client = node(&tmp.path().join("client")).await;

    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    req.peers = vec![bad.clone()];
    let report = timeout(SAFETY, client.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    eprintln!("spread with a hostile peer: {report:?}");
    assert_eq!(report.bad_sources.len(), 1, "{report:?}");
    assert_eq!(report.bad_sources[0].0, bad.endpoint);
    assert!(
        report.bad_sources[0].1.contains("do not verify"),
        "{report:?}"
    );
    assert_eq!(
        report.bytes_from(&bad.endpoint),
        0,
        "no byte of it verified"
    );
    assert!(report.bytes_from(&origin.endpoint_id()) >= blob.size);
    assert!(exported(&client, &blob.hash, tmp.path()).await == content);
    bad_router.shutdown().await.unwrap();
    for n in [&origin, &client] {
        n.shutdown().await.unwrap();
    }
}

/// §5.2 in a spread: the origin's only slot is taken, so it answers busy; the mirror's pieces
/// go on meanwhile, busy is no failure, and the fetch completes with the mirror's help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_origin_leaves_its_pieces_to_the_mirror_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("spread-busy", 4 * MIB);
    let origin = capped(
        &tmp.path().join("origin"),
        UploadLimits {
            max_uploads: Some(1),
            rate: Some(256 * 1024),
        },
    )
    .await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    let mirror = node(&tmp.path().join("mirror")).await;
    mirror.add_bytes(content.clone()).await.unwrap();
    assert!(mirror.mirror_add(&blob.hash).await.unwrap());

    // A first fetcher, from the origin alone, holds its only slot.
    let first = Arc::new(node(&tmp.path().join("first")).await);
    let mut alone = request(&blob.hash, blob.size);
    alone.origin = Some(origin.addr());
    let (tx, mut rx) = mpsc::channel(64);
    let first_fetch = tokio::spawn({
        let (first, alone) = (first.clone(), alone.clone());
        async move { first.fetch(alone, Some(tx)).await }
    });
    loop {
        match timeout(SAFETY, rx.recv()).await.unwrap() {
            Some(FetchEvent::Progress(_)) => break,
            Some(_) => continue,
            None => panic!("the first fetch ended before sending progress"),
        }
    }
    tokio::spawn(async move { while rx.recv().await.is_some() {} });

    let second = node(&tmp.path().join("second")).await;
    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    req.peers = vec![mirror.addr()];
    let (tx2, mut rx2) = mpsc::channel(64 * 1024);
    let report = timeout(SAFETY, second.fetch(req, Some(tx2)))
        .await
        .unwrap()
        .unwrap();
    eprintln!("busy origin in a spread: {report:?}");
    let mut busy = 0;
    while let Ok(ev) = rx2.try_recv() {
        if let FetchEvent::Busy { source, .. } = ev {
            assert_eq!(source, origin.endpoint_id());
            busy += 1;
        }
    }
    assert!(busy >= 1, "the origin answered busy at least once");
    assert!(report.failures.is_empty(), "busy is no failure: {report:?}");
    assert!(report.bytes_from(&mirror.endpoint_id()) > 0, "{report:?}");
    assert!(exported(&second, &blob.hash, tmp.path()).await == content);
    let first_report = timeout(SAFETY, first_fetch)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first_report.bytes_from(&origin.endpoint_id()), blob.size);
    for n in [&origin, &mirror, &*first, &second] {
        n.shutdown().await.unwrap();
    }
}

/// §5.3 (v2) partial mirrors: a node that has verified only the first part of a blob serves
/// that part; a fetcher learns which part with an observe request and asks it for pieces inside
/// it only (so it never fails a request for want of data), the origin sending the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_mirror_serves_what_it_has_verified_and_nothing_else_is_asked_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("spread-partial", 8 * MIB + 999);
    let origin = capped(
        &tmp.path().join("origin"),
        UploadLimits {
            max_uploads: Some(8),
            rate: Some(2 * MIB as u64),
        },
    )
    .await;
    let mirror = Arc::new(node(&tmp.path().join("mirror")).await);
    let client = node(&tmp.path().join("client")).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();

    // The mirror fetches from the origin alone (front to back) and is stopped half-way.
    let mut first = request(&blob.hash, blob.size);
    first.origin = Some(origin.addr());
    let fetching = tokio::spawn({
        let (mirror, first) = (mirror.clone(), first.clone());
        async move { mirror.fetch(first, None).await }
    });
    timeout(SAFETY, async {
        while mirror.local_bytes(&blob.hash).await.unwrap() < 3 * MIB as u64 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    fetching.abort();
    let _ = fetching.await;
    let held = mirror.local_bytes(&blob.hash).await.unwrap();
    assert!(held < blob.size && !mirror.has(&blob.hash).await.unwrap());
    // From now on it serves what it has verified: a partial mirror.
    mirror.serve_partial(&blob.hash, &[]).unwrap();

    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    req.peers = vec![mirror.addr()];
    let report = timeout(SAFETY, client.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "partial mirror holding {held} of {} bytes: {report:?}",
        blob.size
    );
    let from_mirror = report.bytes_from(&mirror.endpoint_id());
    assert!(
        from_mirror > 0,
        "the partial mirror sent pieces: {report:?}"
    );
    assert!(
        from_mirror <= held,
        "it sent only what it had verified: {report:?}"
    );
    assert!(
        report.failures.is_empty() && report.bad_sources.is_empty(),
        "it was never asked for a piece it lacks: {report:?}"
    );
    assert!(
        report.bytes_from(&origin.endpoint_id()) >= blob.size - held,
        "the origin sent the rest: {report:?}"
    );
    assert!(exported(&client, &blob.hash, tmp.path()).await == content);
    assert_eq!(
        mirror.local_bytes(&blob.hash).await.unwrap(),
        held,
        "the mirror stayed partial throughout"
    );
    for n in [&origin, &*mirror, &client] {
        n.shutdown().await.unwrap();
    }
}

/// §5.3 (v2): fetchers watch for new announcements while they fetch. A fetch that starts with
/// the origin alone (a slow uplink) takes pieces from a mirror that turns up while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_found_during_the_fetch_joins_it() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("spread-late", 8 * MIB + 5);
    let origin = capped(
        &tmp.path().join("origin"),
        UploadLimits {
            max_uploads: Some(8),
            rate: Some(MIB as u64),
        },
    )
    .await;
    let mirror = node(&tmp.path().join("mirror")).await;
    let client = node(&tmp.path().join("client")).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    mirror.add_bytes(content.clone()).await.unwrap();

    let (found, watch) = tokio::sync::watch::channel(Vec::new());
    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    req.more_peers = Some(watch);
    let (tx, mut rx) = mpsc::channel(64 * 1024);
    let fetch = client.fetch(req, Some(tx));
    let announce = async {
        // The mirror "announces" once the fetch is under way.
        while let Some(ev) = rx.recv().await {
            if matches!(ev, FetchEvent::Progress(_)) {
                break;
            }
        }
        found.send_replace(vec![mirror.addr()]);
        while rx.recv().await.is_some() {}
    };
    let (report, ()) = timeout(SAFETY, async { tokio::join!(fetch, announce) })
        .await
        .unwrap();
    let report = report.unwrap();
    eprintln!("a mirror joining during the fetch: {report:?}");
    assert!(
        report.bytes_from(&origin.endpoint_id()) > 0,
        "the origin started it: {report:?}"
    );
    assert!(
        report.bytes_from(&mirror.endpoint_id()) > 0,
        "the mirror found meanwhile sent pieces: {report:?}"
    );
    assert!(report.failures.is_empty() && report.bad_sources.is_empty());
    assert!(exported(&client, &blob.hash, tmp.path()).await == content);
    for n in [&origin, &mirror, &client] {
        n.shutdown().await.unwrap();
    }
}
