//! The local API: `POST /v1/rpc` on loopback, a JSON [`Request`] in, JSON out, authenticated by
//! a bearer token kept 0600 in the home. The running node writes `node.json` (its API address)
//! so every other `archy` command finds it.

use super::rpc::{self, Request};
use super::NodeCore;
use crate::home::{read_secret, write_secret, Home};
use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

const TOKEN_FILE: &str = "api.token";
const LOCK_FILE: &str = "node.lock";
const NODE_FILE: &str = "node.json";
/// Largest request body accepted (a release envelope is at most 96 KiB).
const MAX_BODY: usize = 512 * 1024;

/// What a running node tells other processes about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub api: SocketAddr,
    pub pid: u32,
}

/// Creates the API token if there is none (0600), and returns it.
pub fn ensure_token(home: &Home) -> Result<String> {
    let path = home.join(TOKEN_FILE);
    if path.exists() {
        return Ok(String::from_utf8(read_secret(&path)?)?.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = hex::encode(bytes);
    write_secret(&path, token.as_bytes())?;
    Ok(token)
}

/// Binds the API (loopback only) and returns the listener and its address.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("[api] bind {addr:?} is not an ip:port"))?;
    if !addr.ip().is_loopback() {
        bail!("[api] bind {addr} is not a loopback address: the local API never listens beyond this machine");
    }
    Ok(tokio::net::TcpListener::bind(addr).await?)
}

struct ApiState {
    core: Arc<NodeCore>,
    token: String,
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    core: Arc<NodeCore>,
    token: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let state = Arc::new(ApiState { core, token });
    let app = Router::new()
        .route("/v1/rpc", post(rpc_handler))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn token_matches(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn rpc_handler(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !token_matches(given, &state.token) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "missing or wrong API token (see api.token in the node's home)"})),
        );
    }
    let req: Request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))),
    };
    match rpc::handle(&state.core, req).await {
        Ok(v) => (StatusCode::OK, Json(json!({"ok": v}))),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": format!("{e:#}")})),
        ),
    }
}

/// Parses an API request body (kept apart for fuzzing and tests).
pub fn parse_request(body: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(body).map_err(|e| format!("not a valid request: {e}"))
}

/// Records that a node runs here.
pub fn write_node_info(home: &Home, info: &NodeInfo) -> Result<()> {
    write_secret(
        &home.join(NODE_FILE),
        serde_json::to_string(info)?.as_bytes(),
    )
}

/// Forgets the running node (on clean shutdown).
pub fn remove_node_info(home: &Home) {
    let _ = std::fs::remove_file(home.join(NODE_FILE));
}

/// The home's process lock (an advisory `flock`, released by the kernel even after SIGKILL):
/// held by a running node (or `archy blob serve`) for its whole life, and by a one-shot
/// command while it works on the home in-process. redb allows one process per database, and
/// this keeps a starting node and a one-shot command from racing for them.
#[derive(Debug)]
pub struct HomeLock(#[allow(dead_code)] std::fs::File);

/// Who has the home.
pub enum Owner {
    /// A node runs: talk to it.
    Node(Client),
    /// Nobody: the lock is now ours.
    Free(HomeLock),
}

/// Finds the home's owner. While the lock is held but no API answers yet (a node starting, or
/// another one-shot command working), it waits — up to a minute — rather than racing.
pub async fn claim(home: &Home) -> Result<Owner> {
    home.ensure()?;
    let path = home.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    for _ in 0..600 {
        match file.try_lock() {
            Ok(()) => return Ok(Owner::Free(HomeLock(file))),
            Err(std::fs::TryLockError::WouldBlock) => {
                if let Some(client) = Client::connect(home).await? {
                    return Ok(Owner::Node(client));
                }
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!(
        "another archy process holds {} but no node API answers; if nothing runs, check `{}`",
        home.root().display(),
        path.display()
    )
}

/// A client of a running node's API.
pub struct Client {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// The running node of this home, if one answers.
    pub async fn connect(home: &Home) -> Result<Option<Client>> {
        let Ok(text) = std::fs::read_to_string(home.join(NODE_FILE)) else {
            return Ok(None);
        };
        let info: NodeInfo = serde_json::from_str(&text).context("node.json")?;
        // A node killed with SIGKILL leaves node.json behind: check that something listens.
        if tokio::net::TcpStream::connect(info.api).await.is_err() {
            return Ok(None);
        }
        let token = String::from_utf8(read_secret(&home.join(TOKEN_FILE))?)?
            .trim()
            .to_owned();
        Ok(Some(Client {
            url: format!("http://{}/v1/rpc", info.api),
            token,
            http: reqwest::Client::new(),
        }))
    }

    /// Runs an operation on the node; the node's error text becomes the error.
    pub async fn call<O: rpc::Operation>(&self, op: O) -> Result<O::Reply> {
        let req: Request = op.into();
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&req)
            .send()
            .await
            .context("talking to the running node")?;
        let body: Value = resp.json().await.context("the node's answer")?;
        if let Some(v) = body.get("ok") {
            return serde_json::from_value(v.clone())
                .context("the node's answer has another shape");
        }
        bail!(
            "{}",
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or("the node failed")
        )
    }
}
