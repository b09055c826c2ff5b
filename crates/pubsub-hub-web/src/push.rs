//! `GET /events`: the state, pushed as server-sent events.
//!
//! One feed task per app builds the state when the hub changes and publishes it on a
//! `watch` channel; every open stream reads that channel. So:
//! - a burst of messages becomes at most one update per [`push_interval`], whatever the
//!   message rate (a `watch` keeps only the newest value, and a slow browser skips states
//!   instead of queueing them);
//! - the Redis cost is one round trip per update, not per update per tab;
//! - with no stream open, the feed does nothing.
//!
//! Every stream ends when the app's shutdown token is cancelled, so an open tab never
//! blocks a graceful shutdown.
//!
//! [`push_interval`]: crate::DashboardSettings::push_interval

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::app::AppState;
use crate::state::app_state_document;

/// The newest serialized state, shared by every stream; `None` until the first is built
/// (and again while nobody watches, so a new viewer never starts from a stale state).
type Snapshot = Option<Arc<str>>;

/// The single producer of pushed states.
pub(crate) struct StateFeed {
    tx: watch::Sender<Snapshot>,
    /// Poked when a viewer arrives, so an idle feed wakes up and builds a fresh state.
    viewer_arrived: Notify,
    /// Set once the feed task has been spawned (on the first viewer, inside the runtime).
    started: OnceLock<()>,
}

impl StateFeed {
    pub(crate) fn new() -> Self {
        StateFeed {
            tx: watch::Sender::new(None),
            viewer_arrived: Notify::new(),
            started: OnceLock::new(),
        }
    }

    /// A receiver that sees the current state at once (if there is one) and every newer one.
    fn watch(app: &AppState) -> watch::Receiver<Snapshot> {
        let feed = &app.feed;
        feed.started.get_or_init(|| {
            tokio::spawn(run_feed(app.clone()));
        });
        let mut rx = feed.tx.subscribe();
        if rx.borrow().is_some() {
            rx.mark_changed();
        }
        feed.viewer_arrived.notify_one();
        rx
    }
}

/// Builds and publishes states while anyone watches, until shutdown.
async fn run_feed(app: AppState) {
    let feed = Arc::clone(&app.feed);
    let token = app.shutdown.clone();
    let interval = app.settings.push_interval;
    loop {
        if feed.tx.receiver_count() == 0 {
            feed.tx.send_replace(None);
            while feed.tx.receiver_count() == 0 {
                tokio::select! {
                    _ = feed.viewer_arrived.notified() => {}
                    _ = token.cancelled() => return,
                }
            }
        }
        let version = app.hub.version();
        let state = tokio::select! {
            state = app_state_document(&app) => state,
            _ = token.cancelled() => return,
        };
        let text: Arc<str> = state.to_string().into();
        feed.tx.send_replace(Some(text));

        // Coalesce: nothing new goes out before the interval has passed...
        let earliest = Instant::now() + interval;
        tokio::select! {
            _ = tokio::time::sleep_until(earliest) => {}
            _ = token.cancelled() => return,
        }
        // ...and then only once something changed or a new viewer wants a fresh state.
        tokio::select! {
            _ = app.hub.changed(version) => {}
            _ = feed.viewer_arrived.notified() => {}
            _ = token.cancelled() => return,
        }
    }
}

/// `GET /events`: `event: state` with the `/state` document as data, first at once (or as
/// soon as the first state is built), then on every coalesced change; keep-alive comments
/// while idle. Ends at shutdown.
#[utoipa::path(
    get,
    path = "/events",
    tag = "push",
    description = "Server-sent events: `event: state` with the `GET /state` document as \
                   `data`, at once and then on every change (coalesced), with `: keep-alive` \
                   comments while idle. The stream ends only when the server shuts down.",
    responses(
        (status = 200, description = "The stream of `state` events; each one's `data` is a \
                                      `StateDocument` as JSON",
         content_type = "text/event-stream", body = crate::openapi::StateEvent),
        (status = 401, description = "An access token is configured and was not presented", body = crate::openapi::ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = StateFeed::watch(&app);
    let states = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            // An error means the feed is gone: end the stream.
            rx.changed().await.ok()?;
            let snapshot = rx.borrow_and_update().clone();
            if let Some(text) = snapshot {
                let event = Event::default().event("state").data(&*text);
                return Some((Ok(event), rx));
            }
        }
    })
    .take_until(app.shutdown.clone().cancelled_owned());
    Sse::new(states).keep_alive(
        KeepAlive::new()
            .interval(app.settings.keep_alive)
            .text("keep-alive"),
    )
}
