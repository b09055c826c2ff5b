//! Integration tests of the gateway against private Redis servers, with a WebSocket client
//! (tokio-tungstenite) and raw HTTP for SSE and the server API. One test binary, modules by
//! topic.

mod api;
mod auth;
mod cluster;
mod faults;
mod history;
mod limits;
mod presence;
mod protocol;
mod readme;
mod sse;
mod support;
