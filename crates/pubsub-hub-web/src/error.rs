//! The HTTP layer's error type and the form extractor that reports through it.
//!
//! Every failure a client can see, whether a handler's own check, a library error or an
//! extractor rejection, leaves the server as `{"error": "<message>"}` with a 4xx status for
//! bad input and a 5xx status for a failure on the Redis side. Server-side details are
//! logged, never sent.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pubsub_hub::HubError;
use serde::de::DeserializeOwned;
use serde_json::json;

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
    /// No such route: 404.
    NotFound,
    /// The route exists but not for this method: 405.
    MethodNotAllowed,
    /// Redis cannot be reached or did not answer in time: 503.
    Unavailable,
    /// The server is shutting down and the hub is closed: 503.
    ShuttingDown,
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
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message sent in the `error` field.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m) | ApiError::Rejected { message: m, .. } => m.clone(),
            ApiError::NotFound => "not found".into(),
            ApiError::MethodNotAllowed => "method not allowed".into(),
            ApiError::Unavailable => "Redis is unavailable right now; try again shortly".into(),
            ApiError::ShuttingDown => "the server is shutting down".into(),
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
        if matches!(self, ApiError::MethodNotAllowed) {
            // Every route of ours answers GET or POST, never both.
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
        }
        response
    }
}

/// `axum::Form`, but a rejection becomes an [`ApiError`] (so a JSON `{"error": ...}` body),
/// and a request without any `Content-Type` is read as a form, as the guide's servers in
/// other languages do (so an empty `curl -X POST` gets the contract's 400, not a 415).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiForm<T>(pub T);

impl<S, T> FromRequest<S> for ApiForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(mut req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !req.headers().contains_key(header::CONTENT_TYPE) {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        }
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(ApiForm(value)),
            Err(rejection) => Err(ApiError::Rejected {
                status: rejection.status(),
                message: rejection.body_text(),
            }),
        }
    }
}
