//! Interoperability with iroh's own tool, `sendme` 0.37, in both directions.
//!
//! The binary comes from tests/setup/sendme.sh (`$ARCHY_TOOLS/bin/sendme`, default
//! `~/.cache/archy-tools/bin/sendme`, or `$SENDME`). Without it the test is skipped with a
//! message, unless `ARCHY_REQUIRE_TOOLS` is set (tests/run.sh sets it), where its absence is a failure.

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use archy_swarm::Ticket;
use common::*;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    time::timeout,
};

fn sendme() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SENDME").map(PathBuf::from),
        std::env::var_os("ARCHY_TOOLS").map(|t| PathBuf::from(t).join("bin/sendme")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/archy-tools/bin/sendme")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("ARCHY_REQUIRE_TOOLS").is_none(),
            "sendme is required but missing: run tests/setup/sendme.sh"
        );
        eprintln!("SKIPPED: sendme not installed; run tests/setup/sendme.sh");
    }
    found
}

/// Offline flags from ENVIRONMENT.md: no relay, loopback-only sockets.
const OFFLINE: [&str; 7] = [
    "--relay",
    "disabled",
    "--magic-ipv4-addr",
    "127.0.0.1:0",
    "--magic-ipv6-addr",
    "[::1]:0",
    "--no-progress",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archy_fetches_what_sendme_sends() {
    let Some(bin) = sendme() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let content = data("sendme-send", 3 * 1024 * 1024 + 5);
    std::fs::write(share.join("payload.bin"), &content).unwrap();

    let mut child = Command::new(&bin)
        .arg("send")
        .arg("payload.bin")
        .args(OFFLINE)
        .current_dir(&share)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ticket = timeout(SAFETY, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(t) = line.split_whitespace().find(|w| w.starts_with("blob")) {
                return t.to_string();
            }
        }
        panic!("sendme exited without printing a ticket");
    })
    .await
    .unwrap();
    let ticket = Ticket::parse(&ticket).unwrap();
    assert!(ticket.collection, "sendme tickets name a collection");

    let consumer = node(&tmp.path().join("consumer")).await;
    let entries = timeout(
        SAFETY,
        consumer.fetch_collection(&ticket.hash, &ticket.peer, Duration::from_secs(10)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "payload.bin");
    assert_eq!(
        entries[0].1.hash,
        blake3::hash(&content).to_hex().to_string()
    );
    let out = tmp.path().join("out");
    consumer.export_collection(&entries, &out).await.unwrap();
    assert_eq!(std::fs::read(out.join("payload.bin")).unwrap(), content);

    child.kill().await.ok();
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sendme_receives_what_archy_serves() {
    let Some(bin) = sendme() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let content = data("sendme-receive", 2 * 1024 * 1024 + 11);
    let server = node(&tmp.path().join("server")).await;
    let blob = server.add_bytes(content.clone()).await.unwrap();
    let ticket = server
        .share_collection(&[("hello.bin".to_string(), blob.hash.clone())])
        .await
        .unwrap();
    let parsed = Ticket::parse(&ticket).unwrap();
    assert!(parsed.collection);
    assert_eq!(parsed.peer.endpoint, server.endpoint_id());

    let recv_dir = tmp.path().join("recv");
    std::fs::create_dir_all(&recv_dir).unwrap();
    let out = timeout(
        SAFETY,
        Command::new(&bin)
            .arg("receive")
            .arg(&ticket)
            .args(OFFLINE)
            .current_dir(&recv_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "sendme receive failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(recv_dir.join("hello.bin")).unwrap(), content);
    server.shutdown().await.unwrap();
}
