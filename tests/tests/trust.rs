//! Trust end to end (issue 4): the signals arrive as real signed Nostr events through a real
//! relay (WebSocket), a real `archy node run` collects them, and the CLI shows the result.
//!
//! Cast: a consumer node; an anchor A (a key the consumer's operator trusts) whose contact list
//! follows 100 other keys, the reporter R and the publisher P, and who endorses P; R, a key
//! A follows; P, a publisher with its own home that publishes with `archy app publish`.

use archy_marketplace::envelope;
use archy_marketplace::home::Home;
use archy_marketplace::identity::Identity;
use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig, PoolConfig, RelayPool};
use archy_tests::cli::{repo, NodeProc};
use archy_tests::forge::{signed, trust_label, Publisher};
use nostr_sdk::prelude::{Event, Keys, ToBech32};
use serde_json::Value;

use archy_tests::cli::{archy_async as cli, archy_json_async as cli_json};

fn p_tag(hex: &str) -> Vec<String> {
    vec!["p".into(), hex.into()]
}

/// A NIP-32 label in the `archy.trust` namespace.
fn label(keys: &Keys, value: &str, target: &str, created_at: u64) -> Event {
    trust_label(keys, value, &[target.to_owned()], created_at)
}

struct Scene {
    consumer: std::path::PathBuf,
    pool: RelayPool,
}

impl Scene {
    async fn put(&self, event: &Event) {
        let r = self.pool.publish(event).await.unwrap();
        assert!(r.quorum_met, "the relay refused {}", event.id);
    }

    async fn refresh(&self) -> Value {
        cli_json(&self.consumer, &["trust", "refresh", "--json"]).await
    }

    async fn show(&self, key: &str) -> Value {
        cli_json(&self.consumer, &["trust", "show", key, "--json"]).await
    }

    async fn search_tier(&self) -> String {
        let apps = cli_json(&self.consumer, &["market", "search", "hello", "--json"]).await;
        assert_eq!(apps.as_array().unwrap().len(), 1, "{apps}");
        apps[0]["tier"].as_str().unwrap().to_owned()
    }
}

fn score(v: &Value) -> f64 {
    v["score"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_signals_through_a_real_relay_move_a_publisher() {
    let relay = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    let url = relay.url().to_string();
    let pool = RelayPool::connect([url.as_str()], PoolConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (p_home, consumer) = (dir.path().join("publisher"), dir.path().join("consumer"));

    // P: a publisher with its own home, publishing with the CLI.
    std::fs::create_dir_all(&p_home).unwrap();
    let p_id = cli_json(&p_home, &["id", "new", "--json"]).await;
    let p_hex = p_id["nostr"].as_str().unwrap().to_owned();
    let p_did = p_id["did"].as_str().unwrap().to_owned();
    let manifest = repo().join("apps/hello-web/manifest.yaml");
    let out = cli_json(
        &p_home,
        &[
            "app",
            "publish",
            manifest.to_str().unwrap(),
            "--relay",
            &url,
            "--json",
        ],
    )
    .await;
    assert_eq!(out["accepted"], 1, "{out}");

    // A follows 100 keys plus R and P, and endorses P; all signed events on the relay.
    let a = Keys::generate();
    let r = Keys::generate();
    let a_hex = a.public_key().to_hex();
    let r_hex = r.public_key().to_hex();
    let t0 = archy_marketplace::unix_now() - 3600;
    let mut follows: Vec<Vec<String>> = (0..100)
        .map(|_| p_tag(&Keys::generate().public_key().to_hex()))
        .collect();
    follows.push(p_tag(&r_hex));
    follows.push(p_tag(&p_hex));
    let scene = Scene {
        consumer: consumer.clone(),
        pool,
    };
    scene.put(&signed(&a, 3, follows, t0)).await;
    scene.put(&label(&a, "endorse", &p_hex, t0 + 1)).await;

    // The consumer: a real node on the relay, with A as an anchor (given as an npub).
    std::fs::create_dir_all(&consumer).unwrap();
    std::fs::write(
        consumer.join("config.toml"),
        format!("[relays]\nembedded = false\nurls = [{url:?}]\nsync_interval_secs = 3600\n"),
    )
    .unwrap();
    let mut node = NodeProc::start_async(&consumer).await;
    let added = cli_json(
        &consumer,
        &[
            "trust",
            "anchor",
            "add",
            &a.public_key().to_bech32().unwrap(),
            "--json",
        ],
    )
    .await;
    assert_eq!(added["changed"], 1, "{added}");
    assert!(added["anchors"]
        .as_array()
        .unwrap()
        .contains(&Value::from(a_hex.clone())));
    let config = std::fs::read_to_string(consumer.join("config.toml")).unwrap();
    assert!(config.contains(&a_hex), "anchor not persisted: {config}");

    cli_json(&consumer, &["market", "sync", "--json"]).await;
    let refreshed = scene.refresh().await;
    assert!(refreshed["authors"].as_u64().unwrap() >= 2, "{refreshed}");
    assert!(
        refreshed["publishers"].as_u64().unwrap() >= 1,
        "{refreshed}"
    );
    assert!(refreshed["received"].as_u64().unwrap() >= 2, "{refreshed}");

    // P is above an unknown key, with a path from A and an endorsement by A.
    let stranger = Keys::generate().public_key().to_hex();
    let unknown = scene.show(&stranger).await;
    assert_eq!(unknown["tier"], "unknown");
    assert_eq!(score(&unknown), 0.0);
    let s0 = scene.show(&p_hex).await;
    let tier0 = s0["tier"].as_str().unwrap().to_owned();
    assert!(tier0 == "known" || tier0 == "trusted", "{s0:#}");
    assert!(score(&s0) > score(&unknown), "{s0:#}");
    let path = &s0["explanation"]["paths"][0]["hops"];
    assert_eq!(path[0]["from"], a_hex.as_str(), "{s0:#}");
    assert_eq!(
        path[path.as_array().unwrap().len() - 1]["to"],
        p_hex.as_str()
    );
    let by_a = s0["explanation"]["endorsers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == a_hex.as_str())
        .expect("A's edge is among P's endorsers");
    assert_eq!(by_a["kinds"]["endorse"], true);
    assert_eq!(by_a["kinds"]["follow"], true);
    assert_eq!(s0["explanation"]["history"]["accepted_releases"], 1);
    // The human form names the path too; the DID resolves to P's key.
    let text = cli(&consumer, &["trust", "show", &p_hex]).await;
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("strongest paths") && text.contains(&tier0),
        "{text}"
    );
    let by_did = scene.show(&p_did).await;
    assert_eq!(by_did["key"], p_hex.as_str());
    assert_eq!(score(&by_did), score(&s0));
    assert_eq!(scene.search_tier().await, tier0);
    let show = cli_json(&consumer, &["market", "show", "hello-web", "--json"]).await;
    assert_eq!(show["app"]["tier"], tier0.as_str());
    assert_eq!(show["trust"]["tier"], tier0.as_str());
    // A DID the catalog has never seen is a clear error.
    let nobody = Identity::from_keys(
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        Keys::generate(),
    );
    let err = cli(&consumer, &["trust", "show", &nobody.did(), "--json"]).await;
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("archy market sync"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );

    // block → blocked with score 0 (and persisted); unblock → back where it was.
    let b = cli_json(&consumer, &["trust", "block", &p_hex, "--json"]).await;
    assert_eq!(b["changed"], 1, "{b}");
    let blocked = scene.show(&p_hex).await;
    assert_eq!(blocked["tier"], "blocked");
    assert_eq!(score(&blocked), 0.0);
    assert_eq!(blocked["decision"], "deny");
    assert_eq!(
        blocked["explanation"]["blocked"]["type"],
        "operator-denylist"
    );
    assert_eq!(scene.search_tier().await, "blocked");
    let config = std::fs::read_to_string(consumer.join("config.toml")).unwrap();
    assert!(config.contains(&p_hex), "block not persisted: {config}");
    cli_json(&consumer, &["trust", "unblock", &p_hex, "--json"]).await;
    let restored = scene.show(&p_hex).await;
    assert_eq!(restored["tier"], tier0.as_str());
    assert!((score(&restored) - score(&s0)).abs() < 1e-9, "{restored:#}");
    let config = std::fs::read_to_string(consumer.join("config.toml")).unwrap();
    assert!(!config.contains(&p_hex), "unblock not persisted: {config}");

    // A report by R (whom A follows) lowers P, and says who did it.
    scene
        .put(&signed(
            &r,
            1984,
            vec![vec!["p".into(), p_hex.clone(), "malware".into()]],
            t0 + 2,
        ))
        .await;
    scene.refresh().await;
    let s1 = scene.show(&p_hex).await;
    assert!(score(&s1) < score(&s0), "{} !< {}", score(&s1), score(&s0));
    let penalty = &s1["explanation"]["penalties"][0];
    assert_eq!(penalty["from"], r_hex.as_str(), "{s1:#}");
    assert_eq!(penalty["signal"]["reason"], "malware");

    // A distrust label from the anchor blocks P; A's newer endorsement replaces it.
    scene.put(&label(&a, "distrust", &p_hex, t0 + 3)).await;
    scene.refresh().await;
    let distrusted = scene.show(&p_hex).await;
    assert_eq!(distrusted["tier"], "blocked");
    assert_eq!(score(&distrusted), 0.0);
    assert_eq!(
        distrusted["explanation"]["blocked"]["type"],
        "anchor-negative"
    );
    assert_eq!(
        distrusted["explanation"]["blocked"]["anchor"],
        a_hex.as_str()
    );
    scene.put(&label(&a, "endorse", &p_hex, t0 + 4)).await;
    scene.refresh().await;
    let s2 = scene.show(&p_hex).await;
    assert_ne!(s2["tier"], "blocked");
    assert!((score(&s2) - score(&s1)).abs() < 1e-9, "{s2:#}");

    // Equivocation: P signs other bytes for the version the consumer already accepted.
    let show = cli_json(&consumer, &["market", "show", "hello-web", "--json"]).await;
    let first_created = show["releases"][0]["created_at"].as_u64().unwrap();
    let mut other = show["latest_manifest"].as_object().unwrap().clone();
    other.insert(
        "summary".into(),
        Value::from("the same version with other bytes"),
    );
    let p = Publisher {
        identity: Identity::load(&Home::at(&p_home)).unwrap(),
    };
    let env = envelope::sign(other, &p.identity);
    let twin = p.raw_event(env.to_json(), Publisher::tags_of(&env), first_created + 1);
    scene.put(&twin).await;
    cli_json(&consumer, &["market", "sync", "--json"]).await;
    let rejected = cli_json(&consumer, &["market", "rejected", "--json"]).await;
    assert!(
        rejected
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["event_id"] == twin.id.to_hex().as_str() && r["reason"] == "equivocation"),
        "{rejected:#}"
    );
    scene.refresh().await;
    let s3 = scene.show(&p_hex).await;
    assert_eq!(s3["explanation"]["evidence"]["equivocations"], 1, "{s3:#}");
    assert!(score(&s3) < score(&s2), "{} !< {}", score(&s3), score(&s2));

    eprintln!(
        "P's score: endorsed {:.4} ({tier0}), reported {:.4}, re-endorsed {:.4}, equivocated {:.4} ({})",
        score(&s0),
        score(&s1),
        score(&s2),
        score(&s3),
        s3["tier"]
    );
    eprintln!("{text}");

    // With the node stopped, a one-shot command scores from the persisted signals and the
    // catalog: the same answer.
    tokio::task::spawn_blocking(move || node.stop())
        .await
        .unwrap();
    let offline = scene.show(&p_hex).await;
    assert!((score(&offline) - score(&s3)).abs() < 1e-6, "{offline:#}");
    assert_eq!(offline["tier"], s3["tier"]);

    // Without the anchor, nothing leads to P any more.
    cli_json(&consumer, &["trust", "anchor", "rm", &a_hex, "--json"]).await;
    let alone = scene.show(&p_hex).await;
    assert_eq!(score(&alone), 0.0, "{alone:#}");
    assert_eq!(alone["tier"], "unknown");
    let config = std::fs::read_to_string(consumer.join("config.toml")).unwrap();
    assert!(
        !config.contains(&a_hex),
        "anchor removal not persisted: {config}"
    );

    scene.pool.shutdown().await;
    relay.shutdown().await;
}
