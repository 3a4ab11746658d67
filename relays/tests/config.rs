//! Pool set-up errors name the field to fix; a relay that is down at start-up does not stop
//! the pool, and health says why.

mod common;

use archy_relays::{EmbeddedRelay, EmbeddedRelayConfig, RelayError, RelayPool};
use common::*;

#[tokio::test]
async fn bad_configuration_is_refused_with_a_reason() {
    let err = RelayPool::connect(["http://example"], test_config(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::InvalidUrl { .. }), "{err}");
    let err = RelayPool::connect(Vec::<String>::new(), test_config(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::NoRelays), "{err}");
    let err = RelayPool::connect(["ws://127.0.0.1:1"], test_config(2))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("quorum 2"), "{err}");
    let err = RelayPool::connect(["ws://127.0.0.1:1"], test_config(0))
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::InvalidQuorum { .. }), "{err}");
}

#[tokio::test]
async fn a_relay_down_at_start_shows_in_health() {
    let live = EmbeddedRelay::start(EmbeddedRelayConfig::default())
        .await
        .unwrap();
    // A port nobody listens on: bind, note it, release it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead_url = format!("ws://{dead}");
    let pool = RelayPool::connect([live.url().as_str(), dead_url.as_str()], test_config(1))
        .await
        .unwrap();
    let health = pool.health().await;
    assert_eq!(health.len(), 2);
    assert!(
        health[0].connected && health[0].rtt_ms.is_some(),
        "{health:?}"
    );
    assert!(
        !health[1].connected && health[1].rtt_ms.is_none(),
        "{health:?}"
    );
    let why = health[1].last_error.as_deref().unwrap_or_default();
    assert!(why.contains("connect"), "{why}");
    // The health rows serialise for `--json` output.
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json[1]["url"], serde_json::Value::from(dead_url.as_str()));
    pool.shutdown().await;
    live.shutdown().await;
}
