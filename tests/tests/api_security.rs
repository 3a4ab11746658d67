//! The local API and the home, as an attacker on the same machine would probe them: no token,
//! wrong token, a non-loopback bind, file modes, and secrets in logs or answers.

use archy_tests::cli::{api_post, archy, NodeProc};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// POSTs a syntactically valid request padded to `len` bytes; the status code of the answer.
/// The server may answer before reading the whole body, so a failed write is not an error.
fn oversized_post(addr: &str, token: &str, len: usize) -> u16 {
    use std::io::{Read, Write};
    let head = r#"{"method":"status","pad":""#;
    let body = format!("{head}{}\"}}", "x".repeat(len - head.len() - 2));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let _ = write!(
        s,
        "POST /v1/rpc HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_api_needs_the_token_and_the_home_is_private() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let node = NodeProc::start(h).unwrap();
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(h.join("node.json")).unwrap()).unwrap();
    let addr = info["api"].as_str().unwrap().to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let status = r#"{"method":"status"}"#;
    assert_eq!(api_post(h, false, status).0, 401);
    // A wrong token is refused like none.
    let token = std::fs::read_to_string(h.join("api.token")).unwrap();
    std::fs::write(h.join("api.token"), "0".repeat(64)).unwrap();
    assert_eq!(api_post(h, true, status).0, 401);
    std::fs::write(h.join("api.token"), &token).unwrap();
    assert_eq!(api_post(h, true, status).0, 200);
    // Malformed requests are refused with a reason, and the node keeps answering.
    let (code, text) = api_post(h, true, r#"{"method":"rm -rf"}"#);
    assert_eq!(code, 400);
    assert!(text.contains("not a valid request"), "{text}");
    assert_eq!(api_post(h, true, status).0, 200);
    // A body over the 512 KiB cap is refused as too large (not parsed), and the node answers on.
    let token = token.trim();
    assert_eq!(oversized_post(&addr, token, 600 * 1024), 413);
    assert_eq!(api_post(h, true, status).0, 200);

    assert_eq!(mode(h), 0o700);
    for f in [
        "api.token",
        "node.json",
        "identity/did-ed25519.key",
        "identity/nostr-secp256k1.key",
        "swarm/iroh-secret.key",
    ] {
        assert_eq!(mode(&h.join(f)), 0o600, "{f}");
    }

    // No private key or token in any answer or in the log.
    let mut seen = String::new();
    for args in [
        &["node", "status", "--json"][..],
        &["config", "show", "--json"],
        &["id", "show", "--json"],
    ] {
        seen.push_str(&String::from_utf8_lossy(&archy(h, args).stdout));
    }
    drop(node);
    seen.push_str(&std::fs::read_to_string(h.join("node.log")).unwrap());
    for secret in [
        "api.token",
        "identity/did-ed25519.key",
        "identity/nostr-secp256k1.key",
    ] {
        let value = std::fs::read_to_string(h.join(secret)).unwrap();
        assert!(!seen.contains(value.trim()), "{secret} leaked");
    }
}

#[test]
fn the_api_never_binds_beyond_loopback() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[api]\nbind = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let err = NodeProc::start(home.path())
        .err()
        .expect("the node must refuse")
        .to_string();
    assert!(err.contains("not a loopback address"), "{err}");
}
