//! PROTOCOL §5 over real iroh endpoints on loopback, several nodes per test.

mod common;

use std::{sync::Arc, time::Duration};

use archy_swarm::{FetchEvent, FetchRequest, ServePolicy, SwarmError, DEFAULT_MIN_RATE};
use common::*;
use tokio::{sync::mpsc, time::timeout};

const MIB: usize = 1024 * 1024;

/// One source at a time: these tests hold the sequential rules of §5 (origin first, stalls,
/// the rate floor, resumes), which also finish whatever a spread fetch leaves missing. The
/// spread itself is tested in `spread.rs`.
fn request(hash: &str, size: u64) -> FetchRequest {
    let mut r = FetchRequest::new(hash, size);
    r.stall_timeout = Duration::from_secs(3);
    r.sources_at_once = 1;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_up_bytes_come_from_origin_and_are_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("origin-up", 3 * MIB + 123);
    let origin = node(&tmp.path().join("origin")).await;
    let mirror = node(&tmp.path().join("mirror")).await;
    let client = node(&tmp.path().join("client")).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    assert_eq!(blob.size, content.len() as u64);
    assert_eq!(blob.hash, blake3::hash(&content).to_hex().to_string());
    mirror.add_bytes(content.clone()).await.unwrap();

    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    req.peers = vec![mirror.addr()];
    let report = timeout(SAFETY, client.fetch(req.clone(), None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.bytes_from(&origin.endpoint_id()), blob.size);
    assert_eq!(report.bytes_from(&mirror.endpoint_id()), 0);
    assert_eq!(report.completed_by.as_deref(), Some(&*origin.endpoint_id()));
    assert!(report.bad_sources.is_empty() && report.failures.is_empty());
    assert!(client.has(&blob.hash).await.unwrap());
    let out = tmp.path().join("out.bin");
    client.export(&blob.hash, &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), content);
    assert!(client.list().await.unwrap().contains(&blob));

    // Fetching again is a no-op; a wrong expected size is refused even for a local blob.
    let again = client.fetch(req.clone(), None).await.unwrap();
    assert!(again.already_local && again.transferred() == 0);
    req.size = Some(blob.size + 1);
    let err = client.fetch(req, None).await.unwrap_err();
    assert!(matches!(err, SwarmError::SizeMismatch { .. }), "{err}");

    // An ad-hoc get without a manifest size (`archy blob get HASH --from ...`).
    let client2 = node(&tmp.path().join("client2")).await;
    let mut req = FetchRequest::hash_only(&blob.hash);
    req.origin = Some(origin.addr());
    let (tx, mut rx) = mpsc::channel(4096);
    let report = timeout(SAFETY, client2.fetch(req, Some(tx)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.size, blob.size);
    let mut last = None;
    while let Ok(ev) = rx.try_recv() {
        if let FetchEvent::Progress(p) = ev {
            last = Some(p);
        }
    }
    let last = last.expect("progress events");
    assert_eq!((last.size, last.have), (Some(blob.size), blob.size));

    // The node identity is a 0600 key file and survives restarts (see the origin-down test).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = tmp.path().join("origin/iroh-secret.key");
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    for n in [&origin, &mirror, &client, &client2] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_mirror_serves_then_origin_back_wins_again() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("origin-down", 2 * MIB + 7);
    let origin_dir = tmp.path().join("origin");
    let origin = node(&origin_dir).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    let origin_addr = origin.addr();

    // The mirror gets the blob the normal way (from the origin) and records it as mirrored.
    let mirror = node(&tmp.path().join("mirror")).await;
    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin_addr.clone());
    mirror.fetch(req.clone(), None).await.unwrap();

    // Fetched but not (yet) mirrored: the mirror keeps it to itself.
    let probe = node(&tmp.path().join("probe")).await;
    let mut only_mirror = request(&blob.hash, blob.size);
    only_mirror.peers = vec![mirror.addr()];
    let err = timeout(SAFETY, probe.fetch(only_mirror.clone(), None))
        .await
        .unwrap()
        .unwrap_err();
    match err {
        SwarmError::Exhausted { report, .. } => {
            assert!(report.bad_sources.is_empty(), "a refusal is not bad bytes");
            assert_eq!(report.transferred(), 0);
        }
        e => panic!("expected Exhausted, got {e}"),
    }

    assert!(mirror.mirror_add(&blob.hash).await.unwrap());
    let served = timeout(SAFETY, probe.fetch(only_mirror, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served.bytes_from(&mirror.endpoint_id()), blob.size);
    probe.shutdown().await.unwrap();
    assert_eq!(mirror.mirrors(), vec![blob.hash.clone()]);

    origin.shutdown().await.unwrap();
    drop(origin);

    let client = node(&tmp.path().join("client")).await;
    req.peers = vec![mirror.addr()];
    let (tx, mut rx) = mpsc::channel(1024);
    let report = timeout(SAFETY, client.fetch(req.clone(), Some(tx)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.bytes_from(&origin_addr.endpoint), 0);
    assert_eq!(report.bytes_from(&mirror.endpoint_id()), blob.size);
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].0, origin_addr.endpoint);
    assert!(report.bad_sources.is_empty());
    // The caller saw the origin tried first, then the mirror, with progress from the mirror.
    let mut tried = Vec::new();
    let mut progress_from_mirror = false;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            FetchEvent::Trying { source, .. } => tried.push(source),
            FetchEvent::Progress(p) => {
                progress_from_mirror |= p.source == mirror.endpoint_id() && p.have > 0;
            }
            FetchEvent::SourceFailed { .. } | FetchEvent::Busy { .. } => {}
        }
    }
    assert_eq!(
        tried,
        vec![origin_addr.endpoint.clone(), mirror.endpoint_id()]
    );
    assert!(progress_from_mirror);

    // Origin back on the same key and socket: the next fetch (a fresh node) uses it again.
    let origin = reopen(&origin_dir, origin_addr.addrs[0]).await;
    assert_eq!(origin.addr().endpoint, origin_addr.endpoint);
    let client2 = node(&tmp.path().join("client2")).await;
    let report = timeout(SAFETY, client2.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.bytes_from(&origin_addr.endpoint), blob.size);
    assert_eq!(report.bytes_from(&mirror.endpoint_id()), 0);
    assert!(report.failures.is_empty());

    // Mirror bookkeeping survives a restart of the mirror.
    let mirror_dir = mirror.dir().to_path_buf();
    mirror.shutdown().await.unwrap();
    drop(mirror);
    let mirror = node(&mirror_dir).await;
    assert_eq!(mirror.mirrors(), vec![blob.hash.clone()]);
    assert!(mirror.mirror_remove(&blob.hash).unwrap());
    assert!(mirror.mirrors().is_empty());

    for n in [&origin, &mirror, &client, &client2] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_everything_policy_serves_fetched_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("serve-all", MIB / 2);
    let origin = node(&tmp.path().join("origin")).await;
    let blob = origin.add_bytes(content).await.unwrap();
    let open_node = node_with(&tmp.path().join("open"), ServePolicy::Everything).await;
    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    open_node.fetch(req, None).await.unwrap();
    assert!(open_node.mirrors().is_empty());

    let client = node(&tmp.path().join("client")).await;
    let mut req = request(&blob.hash, blob.size);
    req.peers = vec![open_node.addr()];
    let report = timeout(SAFETY, client.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.bytes_from(&open_node.endpoint_id()), blob.size);
    for n in [&origin, &open_node, &client] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_origin_falls_back_to_mirror() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("stall", MIB + 1);
    // The "origin" accepts the connection and the request, then sends nothing.
    let (stuck_router, stuck) = silent().await;
    let mirror = node(&tmp.path().join("mirror")).await;
    let blob = mirror.add_bytes(content.clone()).await.unwrap();
    let client = node(&tmp.path().join("client")).await;
    let mut req = request(&blob.hash, blob.size);
    req.stall_timeout = Duration::from_secs(1);
    req.origin = Some(stuck.clone());
    req.peers = vec![mirror.addr()];
    let report = timeout(SAFETY, client.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].0, stuck.endpoint);
    assert!(report.failures[0].1.contains("stalled"), "{report:?}");
    assert!(
        report.bad_sources.is_empty(),
        "a stall is not evidence of malice"
    );
    assert_eq!(report.bytes_from(&mirror.endpoint_id()), blob.size);
    stuck_router.shutdown().await.unwrap();
    mirror.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
}

/// A trickle well under the default 64 KiB/s floor (at most 2 KiB per 50 ms = 40 KiB/s; a
/// loaded machine only slows it down), yet a 16 KiB chunk group every ~0.4 s: never a stall.
const TRICKLE_PIECE: usize = 2 * 1024;
const TRICKLE_PAUSE: Duration = Duration::from_millis(50);

/// Whole chunk groups around a resume boundary may be sent twice.
const RESUME_SLACK: u64 = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_origin_is_abandoned_as_too_slow_and_the_mirror_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("trickle", 2 * MIB + 5);
    // The trickler serves real bytes (proxied from `upstream`) that verify, just too slowly.
    let upstream = node(&tmp.path().join("upstream")).await;
    let blob = upstream.add_bytes(content.clone()).await.unwrap();
    let (trickle_router, trickler) = trickle(&upstream.addr(), TRICKLE_PIECE, TRICKLE_PAUSE).await;
    let mirror = node(&tmp.path().join("mirror")).await;
    mirror.add_bytes(content.clone()).await.unwrap();
    let client = node(&tmp.path().join("client")).await;

    let mut req = request(&blob.hash, blob.size);
    assert_eq!(req.min_rate, DEFAULT_MIN_RATE, "the default floor is on");
    req.origin = Some(trickler.clone());
    req.peers = vec![mirror.addr()];
    let (tx, mut rx) = mpsc::channel(64 * 1024);
    let report = timeout(SAFETY, client.fetch(req, Some(tx)))
        .await
        .unwrap()
        .unwrap();
    eprintln!("trickle: {report:?}");

    assert_eq!(report.failures.len(), 1, "{report:?}");
    let (who, why) = &report.failures[0];
    assert_eq!(who, &trickler.endpoint);
    assert!(why.starts_with("too slow: "), "{why}");
    assert!(
        why.contains("below the minimum rate of 64.0 KiB/s"),
        "{why}"
    );
    assert!(
        report.bad_sources.is_empty(),
        "a slow source is not evidence of malice"
    );
    assert_eq!(report.completed_by.as_deref(), Some(&*mirror.endpoint_id()));
    let from_trickler = report.bytes_from(&trickler.endpoint);
    let from_mirror = report.bytes_from(&mirror.endpoint_id());
    // "Too slow" (not "stalled") means the trickler delivered verified bytes; they were kept,
    // so the mirror sent only the rest, which is most of the blob.
    assert!(from_trickler > 0, "{report:?}");
    assert!(from_mirror > blob.size / 2, "{report:?}");
    assert!(from_mirror < blob.size, "{report:?}");
    assert!(
        from_trickler + from_mirror <= blob.size + RESUME_SLACK,
        "{report:?}"
    );
    assert_eq!(report.bytes_from(&upstream.endpoint_id()), 0);

    // The caller was told, as it happened, that the origin was left for being slow, not bad.
    let mut failed = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let FetchEvent::SourceFailed {
            source,
            reason,
            bad,
            ..
        } = ev
        {
            failed.push((source, reason, bad));
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, trickler.endpoint);
    assert!(failed[0].1.starts_with("too slow: ") && !failed[0].2);

    let out = tmp.path().join("out.bin");
    client.export(&blob.hash, &out).await.unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(blake3::hash(&got).to_hex().to_string(), blob.hash);
    assert!(got == content);

    trickle_router.shutdown().await.unwrap();
    for n in [&upstream, &mirror, &client] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_origin_alone_still_delivers_as_the_last_resort() {
    let tmp = tempfile::tempdir().unwrap();
    // 256 KiB: more than the trickler can send in one 3 s window (≤ 120 KiB at ≤ 40 KiB/s),
    // so it is found too slow first; then, nobody else having the blob, it finishes.
    let content = data("trickle-alone", 256 * 1024);
    let upstream = node(&tmp.path().join("upstream")).await;
    let blob = upstream.add_bytes(content.clone()).await.unwrap();
    let (trickle_router, trickler) = trickle(&upstream.addr(), TRICKLE_PIECE, TRICKLE_PAUSE).await;
    let client = node(&tmp.path().join("client")).await;

    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(trickler.clone());
    let report = timeout(SAFETY, client.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    eprintln!("trickle alone: {report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].0, trickler.endpoint);
    assert!(report.failures[0].1.starts_with("too slow: "), "{report:?}");
    assert!(report.bad_sources.is_empty());
    assert_eq!(report.completed_by.as_deref(), Some(&*trickler.endpoint));
    // The second attempt resumed where the first stopped. iroh-blobs reports a chunk group's
    // progress just before it stores it: the group in flight when the first attempt was
    // abandoned can be stored uncounted (seen once under load), so one group may be missing
    // from the count, never from the blob.
    let from_trickler = report.bytes_from(&trickler.endpoint);
    assert!(
        from_trickler + 16 * 1024 >= blob.size && from_trickler <= blob.size + RESUME_SLACK,
        "{report:?}"
    );
    let out = tmp.path().join("out.bin");
    client.export(&blob.hash, &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == content);

    trickle_router.shutdown().await.unwrap();
    upstream.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_dying_mid_transfer_is_finished_by_the_mirror_keeping_verified_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("origin-dies", 16 * MIB + 3);
    let origin = node(&tmp.path().join("origin")).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    let origin_id = origin.endpoint_id();
    let mirror = node(&tmp.path().join("mirror")).await;
    mirror.add_bytes(content.clone()).await.unwrap();
    let client = Arc::new(node(&tmp.path().join("client")).await);

    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());
    req.peers = vec![mirror.addr()];
    // Capacity 1: the fetch waits for us at every event, so the origin dies while the transfer
    // is held just after its first verified bytes.
    let (tx, mut rx) = mpsc::channel(1);
    let fetch = tokio::spawn({
        let client = client.clone();
        async move { client.fetch(req, Some(tx)).await }
    });
    loop {
        match timeout(SAFETY, rx.recv()).await.unwrap() {
            Some(FetchEvent::Progress(p)) if p.source == origin_id && p.transferred > 0 => break,
            Some(_) => {}
            None => panic!("fetch ended before the origin sent anything"),
        }
    }
    origin.shutdown().await.unwrap();
    drop(origin);
    let drain = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(ev) = rx.recv().await {
            events.push(ev);
        }
        events
    });
    let report = timeout(SAFETY, fetch).await.unwrap().unwrap().unwrap();
    let events = drain.await.unwrap();
    eprintln!("origin dies: {report:?}");
    let progress_from_mirror = events.iter().any(|ev| {
        matches!(ev, FetchEvent::Progress(p) if p.source == mirror.endpoint_id() && p.transferred > 0)
    });
    assert!(progress_from_mirror);

    assert_eq!(report.completed_by.as_deref(), Some(&*mirror.endpoint_id()));
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].0, origin_id);
    assert!(report.bad_sources.is_empty(), "{report:?}");
    let from_origin = report.bytes_from(&origin_id);
    let from_mirror = report.bytes_from(&mirror.endpoint_id());
    assert!(from_origin > 0 && from_origin < blob.size, "{report:?}");
    // The origin's verified bytes were kept: the mirror served only the rest.
    assert!(from_mirror < blob.size, "{report:?}");
    assert!(
        from_mirror + from_origin <= blob.size + RESUME_SLACK,
        "{report:?}"
    );
    assert!(from_mirror >= blob.size - from_origin, "{report:?}");
    let out = tmp.path().join("out.bin");
    client.export(&blob.hash, &out).await.unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(blake3::hash(&got).to_hex().to_string(), blob.hash);
    assert!(got == content);

    mirror.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_is_detected_dropped_and_fetch_completes_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("hostile", 4 * MIB + 99);
    // Honest for the first MiB, so some verified data is stored before the corruption starts.
    let (bad_router, bad) = hostile(&content, MIB as u64).await;
    let good = node(&tmp.path().join("good")).await;
    let blob = good.add_bytes(content.clone()).await.unwrap();
    let client = node(&tmp.path().join("client")).await;

    let mut req = request(&blob.hash, blob.size);
    req.peers = vec![bad.clone(), good.addr()];
    let report = timeout(SAFETY, client.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.bad_sources.len(), 1, "{report:?}");
    assert_eq!(report.bad_sources[0].0, bad.endpoint);
    assert!(
        report.bad_sources[0].1.contains("hash mismatch"),
        "{report:?}"
    );
    assert_eq!(report.completed_by.as_deref(), Some(&*good.endpoint_id()));
    let from_bad = report.bytes_from(&bad.endpoint);
    let from_good = report.bytes_from(&good.endpoint_id());
    eprintln!("hostile: {report:?}");
    assert!(from_bad > 0 && from_bad < blob.size, "{report:?}");
    // The good source only sent what was missing: the bad source's verified prefix was kept.
    assert!(from_good < blob.size, "{report:?}");

    // Nothing corrupt stayed: the stored blob is exactly the original.
    let out = tmp.path().join("out.bin");
    client.export(&blob.hash, &out).await.unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), content);

    // With only the hostile peer, the fetch fails and names it as bad.
    let other = data("hostile-only", 2 * MIB);
    let (bad_router2, bad2) = hostile(&other, 0).await;
    let client2 = node(&tmp.path().join("client2")).await;
    let mut req = request(&blake3::hash(&other).to_hex(), other.len() as u64);
    req.peers = vec![bad2.clone()];
    let err = timeout(SAFETY, client2.fetch(req.clone(), None))
        .await
        .unwrap()
        .unwrap_err();
    match err {
        SwarmError::Exhausted { report, .. } => {
            assert_eq!(report.bad_sources.len(), 1);
            assert_eq!(report.failures.len(), 1, "a bad source is not retried");
        }
        e => panic!("expected Exhausted, got {e}"),
    }
    assert!(!client2.has(&req.hash).await.unwrap());
    assert_eq!(client2.local_bytes(&req.hash).await.unwrap(), 0);

    bad_router.shutdown().await.unwrap();
    bad_router2.shutdown().await.unwrap();
    for n in [&good, &client, &client2] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_transfer_resumes_instead_of_restarting() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let content = data("resume", size);
    let origin_dir = tmp.path().join("origin");
    let origin = node(&origin_dir).await;
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    let origin_addr = origin.addr();
    let client = Arc::new(node(&tmp.path().join("client")).await);

    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin_addr.clone());
    // Capacity 1: the fetch waits for us at every progress event, so we stop the origin at a
    // deterministic point (half-way) while the transfer is held.
    let (tx, mut rx) = mpsc::channel(1);
    let fetch = tokio::spawn({
        let client = client.clone();
        let req = req.clone();
        async move { client.fetch(req, Some(tx)).await }
    });
    loop {
        match timeout(SAFETY, rx.recv()).await.unwrap() {
            Some(FetchEvent::Progress(p)) if p.transferred >= blob.size / 2 => break,
            Some(_) => {}
            None => panic!("fetch ended before reaching half-way"),
        }
    }
    origin.shutdown().await.unwrap();
    drop(origin);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let err = timeout(SAFETY, fetch).await.unwrap().unwrap().unwrap_err();
    drain.await.unwrap();
    let first = match err {
        SwarmError::Exhausted { report, .. } => report,
        e => panic!("expected Exhausted, got {e}"),
    };
    let first_bytes = first.bytes_from(&origin_addr.endpoint);
    assert!(
        first_bytes >= blob.size / 2 && first_bytes < blob.size,
        "{first:?}"
    );
    let kept = client.local_bytes(&blob.hash).await.unwrap();
    assert!(kept > 0 && kept < blob.size, "kept {kept}");
    assert!(!client.has(&blob.hash).await.unwrap());

    // Restart the origin; the next fetch asks only for what is missing.
    let origin = reopen(&origin_dir, origin_addr.addrs[0]).await;
    let second = timeout(SAFETY, client.fetch(req, None))
        .await
        .unwrap()
        .unwrap();
    let second_bytes = second.bytes_from(&origin_addr.endpoint);
    // Whole chunk groups are re-sent around the boundary, hence a little slack.
    assert!(
        second_bytes > 0 && second_bytes <= blob.size - kept + 256 * 1024,
        "{second:?} kept {kept}"
    );
    let total = first_bytes + second_bytes;
    eprintln!(
        "resume: size {} first {first_bytes} kept {kept} second {second_bytes} total {total}",
        blob.size
    );
    // Close to the blob size (a chunk group in flight may be re-sent), nowhere near double.
    assert!(
        total <= blob.size + blob.size / 20,
        "transferred {total} for a {} byte blob",
        blob.size
    );
    let out = tmp.path().join("out.bin");
    client.export(&blob.hash, &out).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == content);

    origin.shutdown().await.unwrap();
    client.shutdown().await.unwrap();
}

/// PROTOCOL §5.2: an origin with one upload slot, busy with a first fetcher (its upload rate
/// keeps that fetch going for seconds), answers a second fetcher busy; the second backs off
/// (no failed attempt) and, with the origin as its only source, still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_origin_alone_still_completes_the_fetch_after_backing_off() {
    let tmp = tempfile::tempdir().unwrap();
    let content = data("busy-origin", 4 * MIB);
    let limits = archy_swarm::UploadLimits {
        max_uploads: Some(1),
        rate: Some(512 * 1024),
    };
    let origin = archy_swarm::Swarm::open(
        archy_swarm::SwarmConfig::local(tmp.path().join("origin"), "127.0.0.1:0".parse().unwrap())
            .with_uploads(limits),
    )
    .await
    .unwrap();
    let blob = origin.add_bytes(content.clone()).await.unwrap();
    let first = Arc::new(node(&tmp.path().join("first")).await);
    let second = node(&tmp.path().join("second")).await;
    let mut req = request(&blob.hash, blob.size);
    req.origin = Some(origin.addr());

    let (tx, mut rx) = mpsc::channel(64);
    let first_fetch = tokio::spawn({
        let (first, req) = (first.clone(), req.clone());
        async move { first.fetch(req, Some(tx)).await }
    });
    // The first fetch holds the only slot once bytes flow.
    loop {
        match timeout(SAFETY, rx.recv()).await.unwrap() {
            Some(FetchEvent::Progress(_)) => break,
            Some(_) => continue,
            None => panic!("the first fetch ended before sending progress"),
        }
    }
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let (tx2, mut rx2) = mpsc::channel(64);
    let events = tokio::spawn(async move {
        let mut busy = 0;
        while let Some(ev) = rx2.recv().await {
            if matches!(ev, FetchEvent::Busy { .. }) {
                busy += 1;
            }
        }
        busy
    });
    let report = timeout(SAFETY, second.fetch(req, Some(tx2)))
        .await
        .unwrap()
        .expect("a fetch with only a busy origin completes");
    let busy = events.await.unwrap();
    assert!(busy >= 1, "the second fetcher was told busy at least once");
    assert!(report.failures.is_empty(), "busy is no failure: {report:?}");
    assert_eq!(report.bytes_from(&origin.endpoint_id()), blob.size);
    let first_report = timeout(SAFETY, first_fetch)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first_report.bytes_from(&origin.endpoint_id()), blob.size);
    for (name, node) in [("first", &*first), ("second", &second)] {
        let out = tmp.path().join(format!("{name}.bin"));
        node.export(&blob.hash, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), content, "{name} verified");
    }
    assert!(
        origin.uploads().1 >= busy as u64,
        "the origin counted its busy answers"
    );
    // A slot is given back when the server's request handler has ended, just after the
    // client saw its last byte.
    timeout(SAFETY, async {
        while origin.uploads().0 != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every slot was given back");
}
