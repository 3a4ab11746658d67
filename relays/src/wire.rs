//! A minimal NIP-01 reader over a raw WebSocket.
//!
//! Why not nostr-sdk for reads: its relay layer verifies every incoming event and silently
//! drops the ones whose id or signature fail. The node must see those too, to record them as
//! `event-invalid` (PROTOCOL.md §4.1), so reads go through this module and the events are
//! handed over as the relay sent them. Writes and connection health stay on nostr-sdk.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nostr_sdk::prelude::{Event, Filter, JsonUtil, MatchEventOptions, RelayUrl};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Largest message accepted from a relay (the protocol's events are ≤ 96 KiB of content;
/// this leaves room for tags and JSON escaping).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url`, giving up after `timeout`.
pub(crate) async fn connect(url: &RelayUrl, timeout: Duration) -> Result<Ws, String> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let fut = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
        Err(_) => Err(format!(
            "cannot connect: no answer within {}s",
            timeout.as_secs()
        )),
    }
}

/// One message from a relay that the reader cares about.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// An event for subscription `sub` (unverified).
    Event { sub: String, event: Box<Event> },
    /// End of stored events for `sub`.
    Eose { sub: String },
    /// The relay closed `sub`, with its reason.
    Closed { sub: String, message: String },
    /// Anything else (NOTICE, AUTH, OK, COUNT…), or an event that does not parse.
    Other,
}

/// Parses one relay text message. Events that are not even structurally valid (bad hex, wrong
/// field types) become `Other`: there is nothing a caller can check on them.
pub(crate) fn parse_incoming(text: &str) -> Incoming {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        return Incoming::Other;
    };
    let kind = items.first().and_then(Value::as_str).unwrap_or_default();
    let sub = || {
        items
            .get(1)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match kind {
        "EVENT" => match items.get(2).map(|v| Event::from_json(v.to_string())) {
            Some(Ok(event)) => Incoming::Event {
                sub: sub(),
                event: Box::new(event),
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "relay sent an event that does not parse; skipped");
                Incoming::Other
            }
            None => Incoming::Other,
        },
        "EOSE" => Incoming::Eose { sub: sub() },
        "CLOSED" => Incoming::Closed {
            sub: sub(),
            message: items
                .get(2)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        },
        "NOTICE" => {
            tracing::debug!(notice = ?items.get(1), "relay notice");
            Incoming::Other
        }
        _ => Incoming::Other,
    }
}

/// True when `event` matches `filter` (a relay may send more than asked; we keep only what the
/// caller asked for). Signatures are not looked at.
pub(crate) fn matches(filter: &Filter, event: &Event) -> bool {
    filter.match_event(event, MatchEventOptions::new())
}

/// Sends `["REQ", sub, filter]`.
pub(crate) async fn send_req(ws: &mut Ws, sub: &str, filter: &Filter) -> Result<(), String> {
    let msg = format!(r#"["REQ",{},{}]"#, Value::from(sub), filter.as_json());
    ws.send(Message::text(msg))
        .await
        .map_err(|e| format!("send failed: {e}"))
}

/// Sends `["CLOSE", sub]`; errors are ignored (the connection is being left anyway).
pub(crate) async fn send_close(ws: &mut Ws, sub: &str) {
    let msg = format!(r#"["CLOSE",{}]"#, Value::from(sub));
    let _ = ws.send(Message::text(msg)).await;
}

/// What a read from the relay produced.
pub(crate) enum Frame {
    /// A text message (every NIP-01 message is text).
    Text(String),
    /// Any other frame (ping, pong, binary): proof the connection is alive, nothing to parse.
    Activity,
}

/// Reads the next frame. None when the connection ended. Pings are answered by tungstenite
/// itself on the next read.
pub(crate) async fn next_frame(ws: &mut Ws) -> Option<Result<Frame, String>> {
    match ws.next().await? {
        Ok(Message::Text(t)) => Some(Ok(Frame::Text(t.to_string()))),
        Ok(Message::Close(frame)) => Some(Err(match frame {
            Some(f) if !f.reason.is_empty() => format!("relay closed the connection: {}", f.reason),
            _ => "relay closed the connection".to_string(),
        })),
        Ok(_) => Some(Ok(Frame::Activity)),
        Err(e) => Some(Err(format!("connection error: {e}"))),
    }
}

/// Reads the next text message. None when the connection ended.
pub(crate) async fn next_text(ws: &mut Ws) -> Option<Result<String, String>> {
    loop {
        match next_frame(ws).await? {
            Ok(Frame::Text(t)) => return Some(Ok(t)),
            Ok(Frame::Activity) => {}
            Err(e) => return Some(Err(e)),
        }
    }
}

/// Runs one REQ on an open connection and collects the stored events up to EOSE.
pub(crate) async fn req_until_eose(
    ws: &mut Ws,
    sub: &str,
    filter: &Filter,
) -> Result<Vec<Event>, String> {
    send_req(ws, sub, filter).await?;
    let mut events = Vec::new();
    loop {
        match next_text(ws).await {
            None => return Err("connection ended before EOSE".to_string()),
            Some(Err(e)) => return Err(e),
            Some(Ok(text)) => match parse_incoming(&text) {
                Incoming::Event { sub: s, event } if s == sub && matches(filter, &event) => {
                    events.push(*event);
                }
                Incoming::Eose { sub: s } if s == sub => {
                    send_close(ws, sub).await;
                    return Ok(events);
                }
                Incoming::Closed { sub: s, message } if s == sub => {
                    return Err(format!("relay closed the query: {message}"));
                }
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::prelude::{EventBuilder, Keys, Kind};

    #[test]
    fn parses_event_eose_closed() {
        let keys = Keys::generate();
        let ev = EventBuilder::new(Kind::Custom(30078), "x")
            .sign_with_keys(&keys)
            .unwrap();
        let msg = format!(r#"["EVENT","s1",{}]"#, ev.as_json());
        match parse_incoming(&msg) {
            Incoming::Event { sub, event } => {
                assert_eq!(sub, "s1");
                assert_eq!(event.id, ev.id);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(parse_incoming(r#"["EOSE","s1"]"#), Incoming::Eose { sub } if sub == "s1")
        );
        assert!(matches!(
            parse_incoming(r#"["CLOSED","s1","auth-required: no"]"#),
            Incoming::Closed { message, .. } if message == "auth-required: no"
        ));
        assert!(matches!(parse_incoming("not json"), Incoming::Other));
        assert!(matches!(
            parse_incoming(r#"["EVENT","s1",{"id":"zz"}]"#),
            Incoming::Other
        ));
    }

    #[test]
    fn event_with_bad_signature_still_parses() {
        let keys = Keys::generate();
        let ev = EventBuilder::new(Kind::Custom(30078), "original")
            .sign_with_keys(&keys)
            .unwrap();
        let mut v: Value = serde_json::from_str(&ev.as_json()).unwrap();
        v["content"] = Value::from("tampered");
        let msg = format!(r#"["EVENT","s",{v}]"#);
        match parse_incoming(&msg) {
            Incoming::Event { event, .. } => {
                assert_eq!(event.content, "tampered");
                assert!(event.verify().is_err());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
