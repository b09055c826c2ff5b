//! The HTTP layer's error type and the form extractor that reports through it.
//!
//! Every failure a client can see, whether a handler's own check, a library error or an
//! extractor rejection, leaves the server as `{"error": "<message>"}` with a 4xx status for
//! bad input and a 5xx status for a failure on the Redis side. Server-side details are
//! logged, never sent.

use axum::Json;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pubsub_hub::HubError;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::app::AppState;
use crate::form::decode_form;

/// Everything a handler can fail with, mapped to a status and a human-readable message.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is wrong (a missing field, a bad kind, a duplicate name): 400.
    BadRequest(String),
    /// An extractor refused the request (wrong content type, malformed form, body too
    /// large); keeps the extractor's status, always a 4xx.
    Rejected {
        /// The status the extractor chose.
        status: StatusCode,
        /// What it said.
        message: String,
    },
    /// A size limit was exceeded (body, message, name, channel): 413.
    PayloadTooLarge(String),
    /// No valid access token was presented: 401.
    Unauthorized(String),
    /// The request is refused whatever the credentials (cross-site, foreign host): 403.
    Forbidden(String),
    /// Too many wrong access tokens from this client address: 429 with `Retry-After`.
    TooManyRequests {
        /// What to tell the client.
        message: String,
        /// Whole seconds until it may try again (at least 1).
        retry_after_secs: u64,
    },
    /// No such route: 404.
    NotFound,
    /// The route exists but not for this method: 405.
    MethodNotAllowed,
    /// Redis answered but refused the command for this connection's user (ACL `NOPERM`,
    /// authentication): 502, since retrying will not help until Redis is reconfigured.
    RedisRefused(String),
    /// Redis cannot be reached or did not answer in time: 503.
    Unavailable,
    /// The server is shutting down and the hub is closed: 503.
    ShuttingDown,
    /// A change (`/subscribe`, `/unsubscribe`, `/reset`) waited too long for an earlier one
    /// that is stuck on a slow Redis: 503, nothing changed.
    Busy,
    /// The request body did not arrive in time
    /// ([`Limits::body_read_timeout`](crate::Limits::body_read_timeout)): 408.
    BodyTimeout(String),
    /// Anything else: 500 (the details are logged).
    Internal,
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Rejected { status, .. } => *status,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RedisRefused(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::ShuttingDown | ApiError::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message sent in the `error` field.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Rejected { message: m, .. }
            | ApiError::PayloadTooLarge(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::TooManyRequests { message: m, .. }
            | ApiError::RedisRefused(m)
            | ApiError::BodyTimeout(m) => m.clone(),
            ApiError::NotFound => "not found".into(),
            ApiError::MethodNotAllowed => "method not allowed".into(),
            ApiError::Unavailable => "Redis is unavailable right now; try again shortly".into(),
            ApiError::ShuttingDown => "the server is shutting down".into(),
            ApiError::Busy => "the dashboard is busy: an earlier change is still waiting for \
                               Redis, which is slow to answer; nothing was changed, try again \
                               shortly"
                .into(),
            ApiError::Internal => "internal server error".into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().as_u16(), self.message())
    }
}

impl std::error::Error for ApiError {}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        if e.is_invalid_input() {
            // The library's messages for bad input name only what the caller sent.
            ApiError::BadRequest(e.to_string())
        } else if e.is_closed() {
            ApiError::ShuttingDown
        } else if let Some(code) = e.refusal() {
            tracing::warn!(error = %e, "request failed: Redis refused the command");
            ApiError::RedisRefused(format!(
                "Redis refused the command ({code}): the user the dashboard connects as lacks a \
                 permission or the credentials are wrong; fix the Redis ACL or the credentials"
            ))
        } else if e.is_unavailable() {
            tracing::warn!(error = %e, "request failed: Redis unavailable");
            ApiError::Unavailable
        } else {
            tracing::error!(error = %e, "request failed");
            ApiError::Internal
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), Json(json!({ "error": self.message() }))).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        // A 405 gets no `Allow` here: axum adds the route's own methods (`GET,HEAD` or
        // `POST`) to any 405 that has none, which is what RFC 9110 asks for.
        response
    }
}

/// The form extractor of every POST route: a strict `application/x-www-form-urlencoded`
/// decoder ([`decode_form`]) whose every refusal is an [`ApiError`], so a JSON
/// `{"error": ...}` body:
/// - a request without any `Content-Type` is read as a form, as the guide's servers in other
///   languages do (so an empty `curl -X POST` gets the contract's 400, not a 415); any
///   other type than a form is a 415;
/// - a body over [`Limits::max_body_bytes`](crate::Limits::max_body_bytes) is a 413 that names the limit;
/// - malformed percent-encoding, bytes that are not UTF-8 and a field given twice are 400s.
///
/// Fields the target type does not know are ignored, so newer clients can send more.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiForm<T>(pub T);

impl<S, T> FromRequest<S> for ApiForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let max = app.limits.max_body_bytes;
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE)
            && !is_form_content_type(content_type)
        {
            return Err(ApiError::Rejected {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                message: format!(
                    "expected Content-Type application/x-www-form-urlencoded, not {:?}",
                    String::from_utf8_lossy(content_type.as_bytes())
                ),
            });
        }
        let too_large = || {
            ApiError::PayloadTooLarge(format!(
                "the request body is larger than the limit max_body_bytes ({max} bytes)"
            ))
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        // One deadline for the whole body, so that a body dripped a byte at a time cannot
        // hold the connection any longer than one that stopped.
        let read = axum::body::to_bytes(req.into_body(), max);
        let body = match tokio::time::timeout(app.limits.body_read_timeout, read).await {
            Err(_) => {
                return Err(ApiError::BodyTimeout(format!(
                    "the request body did not arrive within {} ms (the limit body_read_timeout)",
                    app.limits.body_read_timeout.as_millis()
                )));
            }
            Ok(read) => read.map_err(|e| {
                if is_length_limit(&e) {
                    too_large()
                } else {
                    ApiError::bad_request("the request body could not be read")
                }
            })?,
        };
        let pairs = decode_form(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut fields = serde_json::Map::new();
        for (name, value) in pairs {
            if fields.contains_key(&name) {
                return Err(ApiError::bad_request(format!(
                    "field {name:?} is given more than once"
                )));
            }
            fields.insert(name, serde_json::Value::String(value));
        }
        serde_json::from_value(serde_json::Value::Object(fields))
            .map(ApiForm)
            .map_err(|e| ApiError::bad_request(format!("the form is malformed: {e}")))
    }
}

/// `application/x-www-form-urlencoded`, in any case, with any parameters (`; charset=UTF-8`).
fn is_form_content_type(value: &HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// True when reading the body failed because it is longer than the limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
