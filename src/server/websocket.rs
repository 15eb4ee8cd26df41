//! Watches over WebSocket, as kube-apiserver's `endpoints/handlers/watch.go` serves them to
//! browsers such as the OpenShift console: an HTTP/1.1 Upgrade on the watch URL itself, then
//! one text frame per JSON event, pings answered, a close frame when the watch ends.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::response::{Body, full};
use crate::api::status::ApiError;

/// The subprotocol the console asks for; for a watch it changes nothing in the frames, which
/// stay JSON text, exactly as with kube-apiserver.
const BASE64_BINARY: &str = "base64.binary.k8s.io";

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether a request asks to be upgraded to a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket")
}

/// Checks the handshake, then answers it with 101 and serves the events `start` begins over
/// the upgraded connection. A refused handshake starts nothing. `keep` lives as long as the
/// WebSocket does (the connection's place among the server's open connections).
pub fn serve(
    headers: &HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    start: impl FnOnce() -> mpsc::Receiver<Bytes>,
    keep: impl Send + 'static,
) -> Result<Response<Body>, ApiError> {
    let Some(on_upgrade) = on_upgrade else {
        return Err(ApiError::bad_request(
            "WebSocket watches need an HTTP/1.1 connection",
        ));
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(ApiError::bad_request(
            "unsupported Sec-WebSocket-Version, want 13",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::bad_request("missing Sec-WebSocket-Key"));
    };
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    // kube-apiserver echoes the one protocol a client offers; of several, take the console's.
    let protocol = offered
        .iter()
        .find(|p| **p == BASE64_BINARY)
        .or(offered.first())
        .copied();

    let mut response = full(
        StatusCode::SWITCHING_PROTOCOLS,
        "application/json",
        Bytes::new(),
    );
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response_headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    response_headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some(protocol) = protocol.and_then(|p| HeaderValue::from_str(p).ok()) {
        response_headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let events = start();
    tokio::spawn(async move {
        let _keep = keep;
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                forward(socket, events).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    Ok(response)
}

/// Sends each event as a text frame until the watch ends (then a normal close) or the client
/// closes. Reading the client's frames is what answers its pings.
async fn forward<S>(socket: WebSocketStream<S>, mut events: mpsc::Receiver<Bytes>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(line) => {
                    let text = line.strip_suffix(b"\n").unwrap_or(&line);
                    let Ok(text) = Utf8Bytes::try_from(line.slice_ref(text)) else {
                        return tracing::error!("watch event is not UTF-8");
                    };
                    if sink.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                None => {
                    let close = CloseFrame { code: CloseCode::Normal, reason: Utf8Bytes::default() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    return;
                }
            },
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {} // the client has nothing to say to a watch
            },
        }
    }
}
