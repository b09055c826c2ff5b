//! A client's write queue: bounded in messages and bytes, and pushing never waits.
//!
//! Whoever produces for a client (the channel fan-out, the client's own command loop, the
//! server API) pushes here; one writer task per connection drains it to the socket. When a
//! push would take the queue past either bound, the queue is cleared and closed with the
//! "slow" disconnect instead: one client that cannot keep up never slows the fan-out, and
//! so never slows anyone else.
//!
//! Closing with another reason (shutdown, an API disconnect) keeps what is queued: the
//! writer sends it, then the disconnect.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::Disconnect;

/// What the writer gets next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Messages to send, oldest first.
    Items(Vec<Arc<str>>),
    /// Nothing more will come: send this disconnect and end.
    Close(Disconnect),
}

struct State {
    items: VecDeque<Arc<str>>,
    bytes: usize,
    closing: Option<Disconnect>,
    /// While set, the writer gets nothing but the close: a connecting client's
    /// server-side channels may already queue publications, and the connect reply has to
    /// go first.
    held: bool,
    /// Items queued before the hold began: they stay ahead of the released first item.
    held_after: usize,
}

/// The bounded queue between producers and one connection's writer.
pub(crate) struct WriteQueue {
    state: Mutex<State>,
    wake: Notify,
    max_messages: usize,
    max_bytes: usize,
    /// Cancelled once the queue is closed, for whoever must stop with it (the command
    /// loop, the SSE stream).
    closed: CancellationToken,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// The queue was full: it is now closed as slow (this push closed it).
    Overflow,
    /// The queue was already closed; the message was dropped.
    Closed,
}

impl WriteQueue {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Self {
        WriteQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                closing: None,
                held: true,
                held_after: 0,
            }),
            wake: Notify::new(),
            max_messages,
            max_bytes,
            closed: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` unless that would pass a bound; never waits.
    pub(crate) fn push(&self, item: Arc<str>) -> Pushed {
        let mut state = self.lock();
        if state.closing.is_some() {
            return Pushed::Closed;
        }
        if state.items.len() >= self.max_messages || state.bytes + item.len() > self.max_bytes {
            state.items.clear();
            state.bytes = 0;
            state.closing = Some(Disconnect::SLOW);
            drop(state);
            self.closed.cancel();
            self.wake.notify_one();
            return Pushed::Overflow;
        }
        state.bytes += item.len();
        state.items.push_back(item);
        drop(state);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// Closes the queue with `reason` after what is queued; the first reason wins. Returns
    /// whether this call closed it.
    pub(crate) fn close(&self, reason: Disconnect) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.closing = Some(reason);
        drop(state);
        self.closed.cancel();
        self.wake.notify_one();
        true
    }

    /// Holds the writer back (see [`WriteQueue::release`]). A new queue starts held.
    pub(crate) fn hold(&self) {
        let mut state = self.lock();
        if !state.held {
            state.held = true;
            state.held_after = state.items.len();
        }
    }

    /// Puts `first` in front of everything queued since the hold began (`discard` drops
    /// those instead) and lets the writer go. `first` is not counted against the bounds: it is
    /// the one reply the connection exists for.
    pub(crate) fn release(&self, first: Option<Arc<str>>, discard: bool) {
        let mut state = self.lock();
        let at = state.held_after.min(state.items.len());
        if discard {
            let dropped: usize = state.items.drain(at..).map(|i| i.len()).sum();
            state.bytes -= dropped;
        }
        if let Some(first) = first
            && state.closing.is_none()
        {
            state.bytes += first.len();
            state.items.insert(at, first);
        }
        state.held = false;
        state.held_after = 0;
        drop(state);
        self.wake.notify_one();
    }

    /// Whether the queue is closed.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Everything queued now (released queues only), without waiting.
    #[cfg(test)]
    pub(crate) fn try_next_for_test(&self) -> Option<Vec<Arc<str>>> {
        let mut state = self.lock();
        if state.held || state.items.is_empty() {
            return None;
        }
        state.bytes = 0;
        Some(state.items.drain(..).collect())
    }

    /// The token cancelled when the queue closes.
    pub(crate) fn closed_token(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// The reason the queue was closed with, if it is.
    pub(crate) fn close_reason(&self) -> Option<Disconnect> {
        self.lock().closing.clone()
    }

    /// Waits for the next batch: everything queued (at most `max_batch_bytes`, but at least
    /// one message), or the close once the queue is drained.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is taken from the queue unless this returns.
    pub(crate) async fn next(&self, max_batch_bytes: usize) -> Next {
        loop {
            let woken = self.wake.notified();
            {
                let mut state = self.lock();
                if !state.items.is_empty() && !state.held {
                    let mut batch = Vec::new();
                    let mut size = 0;
                    while let Some(item) = state.items.front() {
                        if !batch.is_empty() && size + item.len() > max_batch_bytes {
                            break;
                        }
                        size += item.len();
                        let item = state.items.pop_front().expect("front exists");
                        batch.push(item);
                    }
                    state.bytes -= size;
                    return Next::Items(batch);
                }
                if let Some(reason) = &state.closing
                    && (state.items.is_empty() || state.held)
                {
                    return Next::Close(reason.clone());
                }
            }
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_queue_sends_the_released_first_item_before_the_backlog() {
        let q = WriteQueue::new(10, 100);
        q.push("pub".into());
        let next = tokio::time::timeout(std::time::Duration::from_millis(50), q.next(100)).await;
        assert!(next.is_err(), "a held queue gave {next:?}");
        q.release(Some("reply".into()), false);
        match q.next(100).await {
            Next::Items(items) => assert_eq!(
                items.iter().map(|i| &**i).collect::<Vec<_>>(),
                ["reply", "pub"]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_closes_as_slow_and_drops_its_backlog() {
        let q = WriteQueue::new(2, 1000);
        q.release(None, false);
        assert_eq!(q.push("a".into()), Pushed::Queued);
        assert_eq!(q.push("b".into()), Pushed::Queued);
        assert_eq!(q.push("c".into()), Pushed::Overflow);
        assert_eq!(q.push("d".into()), Pushed::Closed);
        assert!(q.is_closed());
        assert!(matches!(q.next(100).await, Next::Close(d) if d == Disconnect::SLOW));
    }

    #[tokio::test]
    async fn the_byte_bound_counts_too_and_draining_frees_room() {
        let q = WriteQueue::new(100, 10);
        q.release(None, false);
        assert_eq!(q.push("12345".into()), Pushed::Queued);
        assert_eq!(q.push("12345".into()), Pushed::Queued);
        match q.next(100).await {
            Next::Items(items) => assert_eq!(items.len(), 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.push("1234567890".into()), Pushed::Queued);
        assert_eq!(q.push("x".into()), Pushed::Overflow);
    }

    #[tokio::test]
    async fn a_normal_close_sends_the_backlog_first() {
        let q = WriteQueue::new(10, 100);
        q.release(None, false);
        q.push("a".into());
        assert!(q.close(Disconnect::SHUTDOWN));
        assert!(!q.close(Disconnect::SLOW));
        assert!(matches!(q.next(100).await, Next::Items(i) if i.len() == 1));
        assert!(matches!(q.next(100).await, Next::Close(d) if d == Disconnect::SHUTDOWN));
    }

    #[tokio::test]
    async fn batches_respect_the_byte_cap_but_always_carry_one() {
        let q = WriteQueue::new(10, 100);
        q.release(None, false);
        q.push("aaaa".into());
        q.push("bbbb".into());
        assert!(matches!(q.next(5).await, Next::Items(i) if i.len() == 1));
        assert!(matches!(q.next(1).await, Next::Items(i) if i.len() == 1));
    }
}
