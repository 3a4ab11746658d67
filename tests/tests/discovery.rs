//! Publishing and discovery through real relays over WebSocket (issue: Nostr publishing and
//! discovery): the node's embedded relay, the third-party nostr-rs-relay, a relay that stores
//! anything (for hostile events), relay faults, and an independent reader (nostr-tools).

use archy_relays::testing::{NostrRsRelay, StoreAnythingRelay};
use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig, PoolConfig, RelayPool};
use archy_tests::cli::{have_tool, repo, sticky_loopback, NodeProc};
use archy_tests::forge::{with_bad_signature, Publisher};
use nostr_sdk::prelude::JsonUtil;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use archy_tests::cli::{archy_async as cli, archy_json_async as cli_json};

fn write_config(home: &Path, relays: &[String], quorum: usize) {
    std::fs::create_dir_all(home).unwrap();
    let urls: Vec<String> = relays.iter().map(|r| format!("{r:?}")).collect();
    std::fs::write(
        home.join("config.toml"),
        format!("[relays]\nembedded = false\nurls = [{}]\nquorum = {quorum}\nsync_interval_secs = 3600\n", urls.join(", ")),
    )
    .unwrap();
}

fn manifest_file(dir: &Path, version: &str) -> String {
    let text = std::fs::read_to_string(repo().join("apps/hello-web/manifest.yaml"))
        .unwrap()
        .replace("version: 1.0.0", &format!("version: {version}"));
    let path = dir.join(format!("hello-{version}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn versions(show: &Value) -> Vec<String> {
    show["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap().to_owned())
        .collect()
}

/// Publish with the CLI to a relay, discover from another home, through the given relay URL.
async fn round_trip(relay: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (publisher, consumer) = (dir.path().join("pub"), dir.path().join("con"));
    std::fs::create_dir_all(&publisher).unwrap();
    assert!(cli(&publisher, &["id", "new"]).await.status.success());
    let m = manifest_file(dir.path(), "1.0.0");
    let out = cli_json(
        &publisher,
        &["app", "publish", &m, "--relay", relay, "--json"],
    )
    .await;
    assert_eq!(out["accepted"], 1, "{out}");
    assert_eq!(out["relays"][0]["outcome"], "accepted");
    let sync = cli_json(&consumer, &["market", "sync", "--relay", relay, "--json"]).await;
    assert_eq!(sync["accepted"], 1, "{sync}");
    let found = cli_json(&consumer, &["market", "search", "hello", "--json"]).await;
    assert_eq!(found[0]["app"], "hello-web");
    assert_eq!(found[0]["latest"], "1.0.0");
    let show = cli_json(&consumer, &["market", "show", "hello-web", "--json"]).await;
    assert_eq!(show["latest_manifest"]["publisher"]["did"], found[0]["did"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_discover_through_the_embedded_relay_and_it_persists() {
    let db = tempfile::tempdir().unwrap();
    let cfg = EmbeddedRelayConfig {
        bind: sticky_loopback(),
        db_dir: Some(db.path().to_path_buf()),
        ..Default::default()
    };
    let relay = EmbeddedRelay::start(cfg.clone()).await.unwrap();
    let url = relay.url().to_string();
    round_trip(&url).await;
    // Restart on the same port with the same store: a new consumer still finds the release.
    let addr = relay.local_addr();
    relay.shutdown().await;
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig { bind: addr, ..cfg })
        .await
        .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let sync = cli_json(fresh.path(), &["market", "sync", "--relay", &url, "--json"]).await;
    assert_eq!(
        sync["accepted"], 1,
        "the restarted relay lost its events: {sync}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_discover_through_nostr_rs_relay() {
    if !have_tool(NostrRsRelay::binary().is_some(), "nostr-rs-relay") {
        return;
    }
    let relay = NostrRsRelay::start().await.unwrap();
    round_trip(&relay.url().to_string()).await;
}

/// Every hostile event of the issue, fed to a running node from a relay that stores anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_events_are_rejected_each_with_its_own_reason() {
    let relay = StoreAnythingRelay::start().await.unwrap();
    let p = Publisher::new(11);
    let other = Publisher::new(12);
    let t0 = archy_marketplace::unix_now() - 3600;
    let mut expected: Vec<(String, &str)> = Vec::new();
    let mut put = |event: &nostr_sdk::prelude::Event, reason: &'static str| {
        relay.insert_raw(serde_json::from_str(&event.as_json()).unwrap());
        if !reason.is_empty() {
            expected.push((event.id.to_hex(), reason));
        }
    };
    // Honest history: 2.0.0, then 1.0.0 later (a backport/replay: history only).
    let env2 = p.sign(p.manifest("hello", "2.0.0"));
    let tags2 = Publisher::tags_of(&env2);
    let content2 = env2.to_json();
    put(&p.raw_event(content2.clone(), tags2.clone(), t0), "");
    let env1 = p.sign(p.manifest("hello", "1.0.0"));
    put(
        &p.raw_event(env1.to_json(), Publisher::tags_of(&env1), t0 + 50),
        "",
    );

    let mut tampered = env2.clone();
    tampered
        .manifest
        .insert("summary".into(), json!("tampered after signing"));
    put(
        &p.raw_event(tampered.to_json(), tags2.clone(), t0 + 1),
        "jws-invalid",
    );
    let mut did_tag = tags2.clone();
    did_tag[3][1] = other.did();
    put(
        &p.raw_event(content2.clone(), did_tag, t0 + 2),
        "did-mismatch",
    );
    let mut swapped = env2.clone();
    swapped.manifest["publisher"]["did"] = Value::from(other.did());
    let mut swapped_tags = tags2.clone();
    swapped_tags[3][1] = other.did();
    put(
        &p.raw_event(swapped.to_json(), swapped_tags, t0 + 3),
        "kid-mismatch",
    );
    put(
        &other.raw_event(content2.clone(), tags2.clone(), t0 + 4),
        "pubkey-mismatch",
    );
    for (i, (idx, value)) in [(0, "archy:app:hello@9.9.9"), (2, "9.9.9"), (4, "00")]
        .into_iter()
        .enumerate()
    {
        let mut changed = tags2.clone();
        changed[idx][1] = if value == "00" {
            "00".repeat(32)
        } else {
            value.to_owned()
        };
        put(
            &p.raw_event(content2.clone(), changed, t0 + 5 + i as u64),
            "tag-mismatch",
        );
    }
    let mut eq = p.manifest("hello", "2.0.0");
    eq.insert("summary".into(), json!("the same version, other bytes"));
    let eq_env = p.sign(eq);
    put(
        &p.raw_event(eq_env.to_json(), Publisher::tags_of(&eq_env), t0 + 20),
        "equivocation",
    );
    for (i, (field, value)) in [
        ("privileged", json!(true)),
        ("binds", json!(["/:/host"])),
        ("security", json!({"capabilities": ["SYS_ADMIN"]})),
    ]
    .into_iter()
    .enumerate()
    {
        let mut m = p.manifest("evil", "1.0.0");
        m.insert(field.into(), value);
        let e = p.sign(m);
        put(
            &p.raw_event(e.to_json(), Publisher::tags_of(&e), t0 + 21 + i as u64),
            "policy",
        );
    }
    let mut big = p.manifest("big", "1.0.0");
    big.insert("x-padding".into(), json!("x".repeat(100 * 1024)));
    let big_env = p.sign(big);
    put(
        &p.raw_event(big_env.to_json(), Publisher::tags_of(&big_env), t0 + 30),
        "content-too-large",
    );
    let mut many = tags2.clone();
    many.extend((0..60).map(|i| vec!["t".to_owned(), format!("extra{i}")]));
    put(
        &p.raw_event(content2.clone(), many, t0 + 31),
        "too-many-tags",
    );
    put(
        &p.raw_event("{\"manifest\": {".into(), tags2.clone(), t0 + 32),
        "content-json",
    );
    put(
        &p.raw_event(
            content2.clone(),
            tags2.clone(),
            archy_marketplace::unix_now() + 86_400,
        ),
        "created-at-future",
    );
    // A bad signature: only a relay that stores anything passes it on.
    let honest = p.raw_event(content2.clone(), tags2.clone(), t0 + 40);
    let bad: Value = serde_json::from_str(&with_bad_signature(&honest)).unwrap();
    relay.insert_raw(bad.clone());
    expected.push((bad["id"].as_str().unwrap().to_owned(), "event-invalid"));

    let home = tempfile::tempdir().unwrap();
    write_config(home.path(), &[relay.url().to_string()], 1);
    let node = NodeProc::start_async(home.path()).await;
    // The node's own discovery (a pass at start, then a live subscription) may have taken
    // them in already; an explicit pass makes sure nothing is pending.
    let sync = cli_json(home.path(), &["market", "sync", "--json"]).await;
    assert!(sync["relays"][0][1]["Ok"].is_number(), "{sync}");

    let rejected = cli_json(home.path(), &["market", "rejected", "--json"]).await;
    let got: Vec<(String, String)> = rejected
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (id, reason) in &expected {
        assert!(
            got.iter().any(|(g, r)| g == id && r == reason),
            "event {id} should be rejected as {reason}; rejected: {got:#?}"
        );
        let text = rejected
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["event_id"] == id.as_str())
            .unwrap();
        assert!(!text["text"].as_str().unwrap().is_empty());
    }
    let reasons: BTreeSet<&str> = expected.iter().map(|(_, r)| *r).collect();
    assert_eq!(reasons.len(), 12, "{reasons:?}");

    // Nothing hostile in the accepted catalog; the lower version is history only.
    let apps = cli_json(home.path(), &["market", "search", "--json"]).await;
    assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
    assert_eq!(apps[0]["latest"], "2.0.0");
    let show = cli_json(home.path(), &["market", "show", "hello", "--json"]).await;
    assert_eq!(versions(&show), ["2.0.0", "1.0.0"]);

    // The node still works: a later honest release is accepted and becomes the latest.
    let env3 = p.sign(p.manifest("hello", "2.1.0"));
    relay.insert_raw(
        serde_json::from_str(
            &p.raw_event(env3.to_json(), Publisher::tags_of(&env3), t0 + 60)
                .as_json(),
        )
        .unwrap(),
    );
    cli_json(home.path(), &["market", "sync", "--json"]).await;
    let show = cli_json(home.path(), &["market", "show", "hello", "--json"]).await;
    assert_eq!(show["app"]["latest"], "2.1.0", "{show}");
    assert!(cli(home.path(), &["node", "status"]).await.status.success());
    drop(node);
}

/// Censorship by a forged duplicate (issue 13): a genuine release and, on a hostile relay, a
/// copy of it under its id and signature with other content. Starts both relays (the hostile
/// one empty), returns (hostile, honest, genuine event, forged copy as JSON).
async fn forged_duplicate_setup() -> (
    StoreAnythingRelay,
    EmbeddedRelay,
    nostr_sdk::prelude::Event,
    Value,
) {
    let hostile = StoreAnythingRelay::start().await.unwrap();
    let honest = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let genuine = Publisher::new(13).release_of("hello", "1.0.0");
    let mut forged: Value = serde_json::from_str(&genuine.as_json()).unwrap();
    let content = genuine
        .content
        .replace("Test app hello", "Forged app hello");
    assert_ne!(content, genuine.content);
    forged["content"] = Value::from(content);
    assert_eq!(forged["id"], genuine.id.to_hex());
    (hostile, honest, genuine, forged)
}

/// Publishes `event` to the honest relay through the relay layer (it checks and stores it).
async fn publish_to(relay: &EmbeddedRelay, event: &nostr_sdk::prelude::Event) {
    let pool = RelayPool::connect([relay.url().as_str()], PoolConfig::default())
        .await
        .unwrap();
    assert_eq!(pool.publish(event).await.unwrap().accepted, 1);
    pool.shutdown().await;
}

/// The rejections the node has counted, per reason code.
async fn rejection_counts(home: &Path) -> Value {
    cli_json(home, &["node", "status", "--json"]).await["rejections"].clone()
}

/// The hostile relay is listed FIRST and serves the forged copy under the genuine id; the honest
/// relay serves the genuine release. One `market sync` accepts the release and records the copy
/// as `event-invalid` (counted; its record goes once the genuine event is accepted); a second
/// pass changes nothing. On the old code (de-duplication by the claimed id) the genuine event
/// was dropped as a duplicate of the copy and never accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_duplicate_on_the_first_relay_does_not_censor_a_sync_pass() {
    let (hostile, honest, genuine, forged) = forged_duplicate_setup().await;
    hostile.insert_raw(forged);
    publish_to(&honest, &genuine).await;
    let home = tempfile::tempdir().unwrap();
    write_config(
        home.path(),
        &[hostile.url().to_string(), honest.url().to_string()],
        1,
    );

    let sync = cli_json(home.path(), &["market", "sync", "--json"]).await;
    assert_eq!(sync["received"], 2, "both copies reach the node: {sync}");
    assert_eq!(
        sync["accepted"], 1,
        "the genuine release is accepted: {sync}"
    );
    assert_eq!(sync["rejected"], 1, "the forged copy is rejected: {sync}");
    let show = cli_json(home.path(), &["market", "show", "hello", "--json"]).await;
    assert_eq!(show["app"]["latest"], "1.0.0", "{show}");
    assert_eq!(
        show["releases"][0]["event_id"],
        genuine.id.to_hex(),
        "{show}"
    );
    assert_eq!(
        show["latest_manifest"]["summary"], "Test app hello 1.0.0",
        "the genuine content, not the forged one: {show}"
    );
    let counts = rejection_counts(home.path()).await;
    assert_eq!(counts, json!({"event-invalid": 1}), "{counts}");
    assert_eq!(
        cli_json(home.path(), &["market", "rejected", "--json"]).await,
        json!([]),
        "no rejection record stays under the id of an accepted release"
    );

    let again = cli_json(home.path(), &["market", "sync", "--json"]).await;
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["rejected"], 0, "{again}");
    assert_eq!(again["already_seen"], 2, "{again}");
    assert_eq!(rejection_counts(home.path()).await, counts);
    honest.shutdown().await;
    hostile.shutdown().await;
}

/// The same through a running node's live subscription (no discovery pass in between): the
/// forged copy arrives first from the hostile relay and is rejected; the genuine release
/// published afterwards on the honest relay still reaches the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_duplicate_does_not_censor_the_live_subscription() {
    let (hostile, honest, genuine, forged) = forged_duplicate_setup().await;
    let home = tempfile::tempdir().unwrap();
    write_config(
        home.path(),
        &[hostile.url().to_string(), honest.url().to_string()],
        1,
    );
    let node = NodeProc::start_async(home.path()).await;
    // The waits below are safety nets (60 s), not performance bounds.
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(100));
    let mut caught_up = 0;
    for _ in 0..600 {
        caught_up = node.log().matches("live subscription on").count();
        if caught_up >= 2 {
            break;
        }
        tick().await;
    }
    assert_eq!(caught_up, 2, "both relays caught up: {}", node.log());

    hostile.insert_raw(forged);
    let mut counts = Value::Null;
    for _ in 0..600 {
        counts = rejection_counts(home.path()).await;
        if counts["event-invalid"] == 1 {
            break;
        }
        tick().await;
    }
    assert_eq!(counts, json!({"event-invalid": 1}), "{}", node.log());

    publish_to(&honest, &genuine).await;
    let mut show = Value::Null;
    for _ in 0..600 {
        let out = cli(home.path(), &["market", "show", "hello", "--json"]).await;
        if out.status.success() {
            show = serde_json::from_slice(&out.stdout).unwrap();
            if show["app"]["latest"] == "1.0.0" {
                break;
            }
        }
        tick().await;
    }
    assert_eq!(
        show["app"]["latest"],
        "1.0.0",
        "the genuine release never arrived live: {}",
        node.log()
    );
    assert_eq!(
        show["releases"][0]["event_id"],
        genuine.id.to_hex(),
        "{show}"
    );
    assert_eq!(show["latest_manifest"]["summary"], "Test app hello 1.0.0");
    // A pass logs "discovery pass" only when it took something in: none did.
    assert!(
        !node.log().contains("discovery pass"),
        "only the live subscription delivered it: {}",
        node.log()
    );
    assert_eq!(rejection_counts(home.path()).await, counts);
    assert_eq!(
        cli_json(home.path(), &["market", "rejected", "--json"]).await,
        json!([])
    );
    // A pass over both relays afterwards finds nothing new.
    let sync = cli_json(home.path(), &["market", "sync", "--json"]).await;
    assert_eq!(sync["accepted"], 0, "{sync}");
    assert_eq!(sync["rejected"], 0, "{sync}");
    drop(node);
    honest.shutdown().await;
    hostile.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_going_away_and_back_loses_nothing_and_duplicates_nothing() {
    let dbs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r1 = EmbeddedRelay::start(EmbeddedRelayConfig {
        db_dir: Some(dbs.0.path().into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let cfg2 = EmbeddedRelayConfig {
        bind: sticky_loopback(),
        db_dir: Some(dbs.1.path().into()),
        ..Default::default()
    };
    let r2 = EmbeddedRelay::start(cfg2.clone()).await.unwrap();
    let (url1, url2, addr2) = (r1.url().to_string(), r2.url().to_string(), r2.local_addr());
    let dir = tempfile::tempdir().unwrap();
    let (publisher, consumer) = (dir.path().join("pub"), dir.path().join("con"));
    write_config(&publisher, &[url1.clone(), url2.clone()], 1);
    write_config(&consumer, &[url1.clone(), url2.clone()], 1);
    assert!(cli(&publisher, &["id", "new"]).await.status.success());

    let out = cli_json(
        &publisher,
        &[
            "app",
            "publish",
            &manifest_file(dir.path(), "1.0.0"),
            "--json",
        ],
    )
    .await;
    assert_eq!(out["accepted"], 2, "{out}");
    let sync = cli_json(&consumer, &["market", "sync", "--json"]).await;
    assert_eq!(sync["accepted"], 1);

    // One relay stops: publishing (quorum 1) and discovery go on; the report names the failure.
    r2.shutdown().await;
    let out = cli_json(
        &publisher,
        &[
            "app",
            "publish",
            &manifest_file(dir.path(), "1.1.0"),
            "--json",
        ],
    )
    .await;
    assert_eq!(out["accepted"], 1, "{out}");
    let failed: Vec<&Value> = out["relays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] != "accepted")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["relay"].as_str().unwrap().trim_end_matches('/'),
        url2.trim_end_matches('/')
    );
    let sync = cli_json(&consumer, &["market", "sync", "--json"]).await;
    assert_eq!(sync["accepted"], 1, "{sync}");

    // It comes back: everything is still there once, nothing twice.
    let r2 = EmbeddedRelay::start(EmbeddedRelayConfig {
        bind: addr2,
        ..cfg2
    })
    .await
    .unwrap();
    let out = cli_json(
        &publisher,
        &[
            "app",
            "publish",
            &manifest_file(dir.path(), "1.2.0"),
            "--json",
        ],
    )
    .await;
    assert_eq!(out["accepted"], 2, "{out}");
    let sync = cli_json(&consumer, &["market", "sync", "--json"]).await;
    assert_eq!(sync["accepted"], 1, "{sync}");
    let sync = cli_json(&consumer, &["market", "sync", "--json"]).await;
    assert_eq!(
        sync["accepted"], 0,
        "a second pass must add nothing: {sync}"
    );
    let show = cli_json(&consumer, &["market", "show", "hello-web", "--json"]).await;
    assert_eq!(versions(&show), ["1.2.0", "1.1.0", "1.0.0"]);
    assert_eq!(
        cli_json(&consumer, &["market", "rejected", "--json"]).await,
        json!([])
    );
    r1.shutdown().await;
    r2.shutdown().await;
}

/// An independent client (nostr-tools under Node) reads a release from the relay and checks
/// its Nostr signature and its DID JWS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nostr_tools_reads_and_verifies_a_published_release() {
    let interop = repo().join("tests/interop");
    let ready = interop.join("node_modules/nostr-tools").exists()
        && Command::new("node").arg("--version").output().is_ok();
    if !have_tool(ready, "Node with tests/interop/node_modules (npm ci)") {
        return;
    }
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let url = relay.url().to_string();
    let dir = tempfile::tempdir().unwrap();
    assert!(cli(dir.path(), &["id", "new"]).await.status.success());
    let out = cli_json(
        dir.path(),
        &[
            "app",
            "publish",
            &manifest_file(dir.path(), "1.0.0"),
            "--relay",
            &url,
            "--json",
        ],
    )
    .await;
    let id = out["event_id"].as_str().unwrap().to_owned();
    let read = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(interop.join("nostr.mjs"))
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(read.status.success(), "{read:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ours = lines
        .iter()
        .find(|l| l["id"] == id.as_str())
        .unwrap_or_else(|| panic!("nostr-tools did not see {id}: {lines:?}"));
    assert_eq!(ours["nostr_ok"], true, "{ours}");
    assert_eq!(ours["jws_ok"], true, "{ours}");
    assert_eq!(ours["app"], "hello-web");
    relay.shutdown().await;
}
