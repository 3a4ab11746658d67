//! A NIP-01 relay that stores ANYTHING: no id, signature, size or time checks. It exists so
//! hostile-event tests can feed a node events an honest relay would refuse (bad signatures,
//! tampered content) and prove that the node's own checks catch them.
//!
//! EVENT → `OK true` and store (the raw JSON object, byte-for-byte as sent). REQ → the stored
//! events matching any of its filters (`ids`, `authors`, `kinds`, `#<letter>`, `since`,
//! `until`, `limit`; newest first), then EOSE, then live events. CLOSE ends a subscription.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use nostr_sdk::RelayUrl;
use serde_json::{Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;

/// The test relay. Dropping it stops it and closes every connection.
#[derive(Debug)]
pub struct StoreAnythingRelay {
    addr: SocketAddr,
    url: RelayUrl,
    store: Arc<Mutex<Vec<Value>>>,
    live: broadcast::Sender<Value>,
    task: JoinHandle<()>,
}

impl StoreAnythingRelay {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let url = RelayUrl::parse(&format!("ws://{addr}")).map_err(std::io::Error::other)?;
        let store = Arc::new(Mutex::new(Vec::new()));
        let (live, _) = broadcast::channel(1024);
        let task = tokio::spawn(accept_loop(listener, store.clone(), live.clone()));
        Ok(Self {
            addr,
            url,
            store,
            live,
            task,
        })
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> RelayUrl {
        self.url.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything stored so far, in arrival order.
    pub fn stored(&self) -> Vec<Value> {
        self.store.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stores a raw event object directly (no WebSocket), e.g. one that is not even a valid
    /// Nostr event, and pushes it to live subscriptions.
    pub fn insert_raw(&self, event: Value) {
        store_event(&self.store, &self.live, event);
    }

    /// Stops the relay and closes every connection.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for StoreAnythingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn store_event(store: &Mutex<Vec<Value>>, live: &broadcast::Sender<Value>, event: Value) -> bool {
    let Ok(mut s) = store.lock() else {
        return false;
    };
    if s.contains(&event) {
        return false;
    }
    s.push(event.clone());
    drop(s);
    let _ = live.send(event);
    true
}

async fn accept_loop(
    listener: TcpListener,
    store: Arc<Mutex<Vec<Value>>>,
    live: broadcast::Sender<Value>,
) {
    // The JoinSet is dropped with this task, which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                connections.spawn(serve(stream, store.clone(), live.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, store: Arc<Mutex<Vec<Value>>>, live: broadcast::Sender<Value>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let mut live_rx = live.subscribe();
    let mut subs: HashMap<String, Vec<Map<String, Value>>> = HashMap::new();
    loop {
        tokio::select! {
            msg = rx.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                for reply in handle(&text, &store, &live, &mut subs) {
                    if tx.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            }
            event = live_rx.recv() => {
                let Ok(event) = event else { continue };
                for (sub, filters) in &subs {
                    if filters.iter().any(|f| matches_filter(f, &event)) {
                        let msg = Value::Array(vec!["EVENT".into(), sub.clone().into(), event.clone()]);
                        if tx.send(Message::text(msg.to_string())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Handles one client message and returns the replies.
fn handle(
    text: &str,
    store: &Mutex<Vec<Value>>,
    live: &broadcast::Sender<Value>,
    subs: &mut HashMap<String, Vec<Map<String, Value>>>,
) -> Vec<String> {
    let notice = |m: &str| vec![Value::Array(vec!["NOTICE".into(), m.into()]).to_string()];
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        return notice("invalid: not a JSON array");
    };
    match items.first().and_then(Value::as_str) {
        Some("EVENT") => {
            let Some(event) = items.get(1).cloned() else {
                return notice("invalid: EVENT without event");
            };
            let id = event.get("id").cloned().unwrap_or(Value::from(""));
            // Live subscribers of this very connection get it through the broadcast.
            store_event(store, live, event);
            vec![Value::Array(vec!["OK".into(), id, true.into(), "".into()]).to_string()]
        }
        Some("REQ") => {
            let Some(sub) = items.get(1).and_then(Value::as_str) else {
                return notice("invalid: REQ without subscription id");
            };
            let filters: Vec<Map<String, Value>> = items[2..]
                .iter()
                .filter_map(|f| f.as_object().cloned())
                .collect();
            let stored = store.lock().map(|s| s.clone()).unwrap_or_default();
            let mut out: Vec<String> = select(&filters, &stored)
                .into_iter()
                .map(|e| Value::Array(vec!["EVENT".into(), sub.into(), e]).to_string())
                .collect();
            out.push(Value::Array(vec!["EOSE".into(), sub.into()]).to_string());
            subs.insert(sub.to_string(), filters);
            out
        }
        Some("CLOSE") => {
            if let Some(sub) = items.get(1).and_then(Value::as_str) {
                subs.remove(sub);
            }
            Vec::new()
        }
        _ => notice("unsupported: only EVENT, REQ and CLOSE"),
    }
}

/// The stored events matching any of `filters`, each at most once, honouring each filter's
/// `limit` (newest first, as NIP-01 asks).
pub fn select(filters: &[Map<String, Value>], stored: &[Value]) -> Vec<Value> {
    let mut by_newest: Vec<&Value> = stored.iter().collect();
    by_newest.sort_by_key(|e| std::cmp::Reverse(created_at(e)));
    let mut out: Vec<Value> = Vec::new();
    for filter in filters {
        let limit = filter
            .get("limit")
            .and_then(Value::as_u64)
            .map(|l| l as usize)
            .unwrap_or(usize::MAX);
        for event in by_newest
            .iter()
            .filter(|e| matches_filter(filter, e))
            .take(limit)
        {
            if !out.contains(event) {
                out.push((*event).clone());
            }
        }
    }
    out
}

fn created_at(event: &Value) -> i64 {
    event.get("created_at").and_then(Value::as_i64).unwrap_or(0)
}

/// NIP-01 filter matching on raw JSON (no event validation at all).
pub fn matches_filter(filter: &Map<String, Value>, event: &Value) -> bool {
    let str_in = |key: &str, field: &str| -> bool {
        match filter.get(key).and_then(Value::as_array) {
            None => true,
            Some(list) => {
                let v = event.get(field).and_then(Value::as_str).unwrap_or_default();
                list.iter().filter_map(Value::as_str).any(|x| x == v)
            }
        }
    };
    if !str_in("ids", "id") || !str_in("authors", "pubkey") {
        return false;
    }
    if let Some(kinds) = filter.get("kinds").and_then(Value::as_array) {
        let kind = event.get("kind").and_then(Value::as_u64);
        if !kinds
            .iter()
            .any(|k| k.as_u64().is_some() && k.as_u64() == kind)
        {
            return false;
        }
    }
    let t = created_at(event);
    if let Some(since) = filter.get("since").and_then(Value::as_i64) {
        if t < since {
            return false;
        }
    }
    if let Some(until) = filter.get("until").and_then(Value::as_i64) {
        if t > until {
            return false;
        }
    }
    for (key, wanted) in filter {
        let Some(letter) = key.strip_prefix('#') else {
            continue;
        };
        let Some(wanted) = wanted.as_array() else {
            continue;
        };
        let tags = event
            .get("tags")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let hit = tags.iter().any(|tag| {
            let Some(tag) = tag.as_array() else {
                return false;
            };
            tag.first().and_then(Value::as_str) == Some(letter)
                && tag
                    .get(1)
                    .and_then(Value::as_str)
                    .is_some_and(|v| wanted.iter().any(|w| w.as_str() == Some(v)))
        });
        if !hit {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn filter_matching() {
        let ev = json!({"id":"aa","pubkey":"pk","kind":30078,"created_at":100,
            "tags":[["t","archy-app"],["d","archy:app:x@1.0.0"]],"content":"","sig":"00"});
        assert!(matches_filter(
            &f(json!({"kinds":[30078],"#t":["archy-app"]})),
            &ev
        ));
        assert!(!matches_filter(&f(json!({"kinds":[1]})), &ev));
        assert!(!matches_filter(&f(json!({"#t":["archy-mirror"]})), &ev));
        assert!(matches_filter(
            &f(json!({"authors":["pk"],"since":100,"until":100})),
            &ev
        ));
        assert!(!matches_filter(&f(json!({"since":101})), &ev));
        assert!(!matches_filter(&f(json!({"ids":["bb"]})), &ev));
    }

    #[test]
    fn select_honours_limit_newest_first() {
        let evs: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("{i}"), "kind": 1, "created_at": i}))
            .collect();
        let got = select(&[f(json!({"kinds":[1],"limit":2}))], &evs);
        let ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["4", "3"]);
    }
}
