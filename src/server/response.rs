//! Building responses: JSON bodies, streamed bodies, Status errors, Warning headers.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use http::HeaderMap;

use super::negotiate::{Delivery, Encoding, Output, accept, output};
use super::query::Query;
use super::render;
use crate::api::status::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("a valid content type"),
    );
    response
}

pub fn json(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    full(code, "application/json", body)
}

/// An object, list or Status in the negotiated encoding. YAML is converted from the JSON; its
/// keys come out sorted, as sigs.k8s.io/yaml writes them for kube-apiserver.
pub fn encoded(code: StatusCode, encoding: Encoding, body: impl Into<Bytes>) -> Response<Body> {
    let body = body.into();
    match encoding {
        Encoding::Json => json(code, body),
        Encoding::Yaml => match to_yaml(&body) {
            Ok(yaml) => full(code, encoding.content_type(), yaml),
            Err(e) => error(&e, Encoding::Json),
        },
    }
}

/// JSON bytes as YAML.
pub fn to_yaml(json: &[u8]) -> Result<String, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| ApiError::internal(e.to_string()))?;
    serde_saphyr::to_string(&value).map_err(|e| ApiError::internal(e.to_string()))
}

pub fn error(e: &ApiError, encoding: Encoding) -> Response<Body> {
    encoded(e.code, encoding, e.to_status().to_string())
}

/// A body fed by a channel: each message is one chunk (HTTP/1.1 chunked, HTTP/2 data frame).
/// The channel is bounded, so a slow reader holds back the writer instead of memory growing.
pub fn streamed(code: StatusCode, content_type: &str) -> (mpsc::Sender<Bytes>, Response<Body>) {
    // A few chunks of a page each: what a slow reader makes the server hold, per response.
    let (sender, receiver) = mpsc::channel::<Bytes>(2);
    (sender, body_from(code, content_type, receiver))
}

/// A response whose body is the chunks `receiver` yields, until its sender is gone.
pub fn body_from(
    code: StatusCode,
    content_type: &str,
    receiver: mpsc::Receiver<Bytes>,
) -> Response<Body> {
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), receiver))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("a valid content type"),
    );
    response
}

/// Adds `Warning: 299 - "..."` headers, as kube-apiserver sends them.
pub fn with_warnings(mut response: Response<Body>, warnings: &[String]) -> Response<Body> {
    for warning in warnings {
        let text = format!("299 - {:?}", warning);
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// A response body that keeps `T` alive until the body is done: the connection's busy mark,
/// and a request body left unread (dropping it first would reset an HTTP/2 stream before the
/// answer is out).
pub struct Tracked<T> {
    body: Body,
    _kept: T,
}

impl<T> Tracked<T> {
    pub fn new(body: Body, kept: T) -> Tracked<T> {
        Tracked { body, _kept: kept }
    }
}

impl<T: Unpin> hyper::body::Body for Tracked<T> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The form the client asked for its answer: a full object, a Table, or
/// PartialObjectMetadata (as the garbage collector's metadata client asks), in JSON or YAML.
/// Negotiated before anything is done, so that a write is never made and then refused a 406.
pub fn response_form(headers: &HeaderMap, query: &Query) -> Result<(Output, Encoding), ApiError> {
    output(accept(headers), query.get("includeObject"), Delivery::Whole)
}

/// An object in the negotiated form, as kube-apiserver transforms every response object.
pub fn object_response(
    (format, encoding): (Output, Encoding),
    code: StatusCode,
    object: Bytes,
) -> Result<Response<Body>, ApiError> {
    let rendered = render::object(format, &object, render::Columns::Defined)?;
    Ok(encoded(code, encoding, rendered.unwrap_or(object)))
}
