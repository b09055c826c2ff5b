//! `GET /events`: the state, pushed as server-sent events: the whole document first, then
//! only what changed.
//!
//! One feed task per app takes the newest document (the one `/state` serves, built once
//! per hub version) when the hub changes and publishes it on a `watch` channel, with the
//! delta from the one it published before; every open stream reads that channel. So:
//! - a burst of messages becomes at most one update per [`push_interval`], whatever the
//!   message rate (a `watch` keeps only the newest value, and a slow browser skips states
//!   instead of queueing them);
//! - the Redis cost is one round trip per update, not per update per tab;
//! - a stream sends `event: state` (the whole document) once, when it opens, and then
//!   `event: delta` (made by the private `delta` module, protocol in `docs/http-api.md`)
//!   from the document it sent last: the feed's delta when the stream kept up, else one
//!   made for the stream;
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
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::app::AppState;
use crate::delta::{delta, top_fields};
use crate::state::{BuiltState, app_state};

/// A document as the feed publishes it.
#[derive(Clone)]
struct Published {
    state: Arc<BuiltState>,
    /// Its top-level fields but `subscriptions`, as JSON (what deltas compare).
    top: Arc<Map<String, Value>>,
    /// The document published before this one, and the delta from it.
    from_previous: Option<(Arc<BuiltState>, Arc<str>)>,
}

impl Published {
    /// The delta from `last` (a document this feed published) to this one.
    fn delta_from(&self, last: &Published) -> Arc<str> {
        match &self.from_previous {
            Some((previous, text)) if Arc::ptr_eq(previous, &last.state) => Arc::clone(text),
            _ => delta(&last.state.doc, &last.top, &self.state.doc, &self.top).into(),
        }
    }
}

/// The newest published document, shared by every stream; `None` until the first is built
/// (and again while nobody watches, so a new viewer never starts from a stale state).
type Snapshot = Option<Published>;

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
        let built = tokio::select! {
            built = app_state(&app) => built,
            _ = token.cancelled() => return,
        };
        // The document shows at least this version: wait for a newer one below.
        let version = built.doc.version;
        let previous = feed.tx.borrow().clone();
        match previous {
            Some(p) if Arc::ptr_eq(&p.state, &built) => {}
            previous => {
                let top = Arc::new(top_fields(&built.doc));
                let from_previous = previous.map(|p| {
                    let text = delta(&p.state.doc, &p.top, &built.doc, &top);
                    (p.state, Arc::from(text))
                });
                feed.tx.send_replace(Some(Published {
                    state: built,
                    top,
                    from_previous,
                }));
            }
        }

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
/// soon as the first state is built), then `event: delta` with what changed, on every
/// coalesced change; keep-alive comments while idle. Ends at shutdown.
///
/// # Cancel safety
/// Cancel-safe: the stream only holds a `watch` receiver and the document it sent last;
/// dropping it (the client left) releases them, and the feed stops building states once
/// no stream watches.
#[utoipa::path(
    get,
    path = "/events",
    tag = "push",
    description = "Server-sent events. First `event: state` with the `GET /state` document \
                   as `data`; then, on every change (coalesced), `event: delta` whose `data` \
                   (a `StateDelta`) turns the document the stream sent last into the newest \
                   one: changed top-level fields whole, removed subscribers by name, added \
                   or changed subscribers with only their new messages. A client applies \
                   each delta to its copy (its `base` is that copy's `version`) and \
                   reconnects for a fresh `state` if they ever disagree. `: keep-alive` \
                   comments while idle. The stream ends only when the server shuts down.",
    responses(
        (status = 200, description = "The stream: one `state` event (`data`: a \
                                      `StateDocument`), then `delta` events (`data`: a \
                                      `StateDelta`)",
         content_type = "text/event-stream", body = crate::openapi::StateEvent),
        (status = 401, description = "An access token is configured and was not presented", body = crate::openapi::ErrorBody),
        (status = 403, description = "Refused whatever the credentials (a foreign Host)", body = crate::openapi::ErrorBody),
    )
)]
pub async fn events(
    State(app): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = StateFeed::watch(&app);
    let last: Option<Published> = None;
    let states = futures_util::stream::unfold((rx, last), |(mut rx, mut last)| async move {
        loop {
            // An error means the feed is gone: end the stream.
            rx.changed().await.ok()?;
            let Some(newest) = rx.borrow_and_update().clone() else {
                continue;
            };
            let event = match &last {
                None => {
                    let text = std::str::from_utf8(&newest.state.json).unwrap_or("{}");
                    Event::default().event("state").data(text)
                }
                Some(sent) if Arc::ptr_eq(&sent.state, &newest.state) => continue,
                Some(sent) => Event::default()
                    .event("delta")
                    .data(&*newest.delta_from(sent)),
            };
            last = Some(newest);
            return Some((Ok(event), (rx, last)));
        }
    })
    .take_until(app.shutdown.clone().cancelled_owned());
    Sse::new(states).keep_alive(
        KeepAlive::new()
            .interval(app.settings.keep_alive)
            .text("keep-alive"),
    )
}
