//! One consumer's bounded event queue.
//!
//! The socket reader pushes and never waits. The queue is bounded twice: in events
//! ([`HubConfig::queue_capacity`](crate::HubConfig::queue_capacity)) and in payload bytes
//! ([`HubConfig::queue_max_bytes`](crate::HubConfig::queue_max_bytes)). Past either bound
//! the oldest *message* is dropped and counted, and the consumer reads
//! [`Event::Lagged`] with the count at the place where the dropped messages were, as with
//! tokio's `broadcast`. The newest message is always queued, whatever its size.
//!
//! Connection events are never dropped: a consumer that read `Disconnected` and then fell
//! behind still reads `Reconnected`, in order. The one exception keeps the bound real: when
//! the queue holds nothing but connection events and lag reports, a `Reconnected` followed
//! (with nothing but dropped messages in between) by a `Disconnected` is taken out, so two
//! gaps the consumer has not read yet become one longer gap, still correctly opened and
//! closed. Connection events alternate, so what is left besides messages is at most
//! `Disconnected, Reconnected`: a queue holds at most `max(queue_capacity, 3)` events, plus
//! the lag reports between them (one more than the events at most, a few bytes each).
//!
//! Unlike `broadcast`, which allocates every slot when the channel is made (about 48 KiB at
//! the default capacity), the queue grows only as far as its consumer ever fell behind
//! (never past the bound), so ten thousand consumers that keep up cost almost nothing. It
//! does not shrink again: a queue that drains and refills in bursts would otherwise
//! reallocate on every burst.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::subscription::Event;

pub(crate) struct EventQueue {
    capacity: usize,
    max_bytes: usize,
    state: Mutex<QueueState>,
    /// Woken on every push and on close; one consumer reads a queue, so a stored permit
    /// cannot be lost.
    ready: Notify,
    /// The hub-wide count of payload bytes held by consumer queues, kept up to date by
    /// every push, pop, drop and by the queue's own drop.
    gauge: Arc<AtomicU64>,
}

#[derive(Default)]
struct QueueState {
    /// Events in order. `Event::Lagged(n)` entries are the queue's own markers: `n`
    /// messages were dropped at that place.
    entries: VecDeque<Event>,
    /// Payload bytes of the queued messages.
    bytes: usize,
    /// How many of `entries` are lag markers; the event bound counts the others.
    markers: usize,
    closed: bool,
}

/// Payload bytes a queued event holds.
fn size_of(event: &Event) -> usize {
    match event {
        Event::Message(m) => m.payload.as_bytes().len(),
        _ => 0,
    }
}

impl QueueState {
    /// Drops the oldest message among the first `before` entries and leaves a lag marker
    /// in its place (merged with a neighbouring one). Returns its size, or `None` if there
    /// is no such message.
    fn drop_oldest_message(&mut self, before: usize) -> Option<usize> {
        let i = self
            .entries
            .iter()
            .take(before)
            .position(|e| matches!(e, Event::Message(_)))?;
        let size = size_of(&self.entries[i]);
        self.bytes -= size;
        self.entries[i] = Event::Lagged(1);
        self.markers += 1;
        self.merge_lag_at(i);
        Some(size)
    }

    /// Merges the lag marker at `i` with lag markers right before and after it.
    fn merge_lag_at(&mut self, mut i: usize) {
        if i > 0
            && let (Event::Lagged(before), Event::Lagged(here)) =
                (&self.entries[i - 1], &self.entries[i])
        {
            self.entries[i - 1] = Event::Lagged(before + here);
            self.entries.remove(i);
            self.markers -= 1;
            i -= 1;
        }
        if i + 1 < self.entries.len()
            && let (Event::Lagged(here), Event::Lagged(after)) =
                (&self.entries[i], &self.entries[i + 1])
        {
            self.entries[i] = Event::Lagged(here + after);
            self.entries.remove(i + 1);
            self.markers -= 1;
        }
    }

    /// Takes out the first `Reconnected` whose next entry other than a lag marker is a
    /// `Disconnected`, and that `Disconnected`: two unread gaps become one. Returns false
    /// if there is no such pair.
    fn merge_two_gaps(&mut self) -> bool {
        let len = self.entries.len();
        for r in 0..len {
            if !matches!(self.entries[r], Event::Reconnected) {
                continue;
            }
            let mut d = r + 1;
            while d < len && matches!(self.entries[d], Event::Lagged(_)) {
                d += 1;
            }
            if d < len && matches!(self.entries[d], Event::Disconnected { .. }) {
                self.entries.remove(d);
                self.entries.remove(r);
                // Lag markers that were on both sides of the pair are now neighbours.
                if r < self.entries.len() && matches!(self.entries[r], Event::Lagged(_)) {
                    self.merge_lag_at(r);
                }
                return true;
            }
        }
        false
    }
}

impl EventQueue {
    pub(crate) fn new(capacity: usize, max_bytes: usize, gauge: Arc<AtomicU64>) -> Self {
        EventQueue {
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            gauge,
        }
    }

    /// A queue that is already at its end.
    pub(crate) fn closed() -> Self {
        let queue = EventQueue::new(1, 1, Arc::default());
        queue.close();
        queue
    }

    /// Appends `event`, dropping the oldest messages if a bound is exceeded. Returns how
    /// many messages were dropped. Never waits.
    pub(crate) fn push(&self, event: Event) -> u64 {
        let mut dropped = 0;
        let mut released = 0;
        let added;
        {
            let mut st = self.lock();
            if st.closed {
                return 0;
            }
            let size = size_of(&event);
            added = size;
            let is_message = matches!(event, Event::Message(_));
            st.bytes += size;
            st.entries.push_back(event);
            // The event just pushed is never dropped here: the newest message is kept
            // whole, and connection events are kept.
            loop {
                let over_count = st.entries.len() - st.markers > self.capacity;
                let over_bytes = st.bytes > self.max_bytes;
                if !over_count && !over_bytes {
                    break;
                }
                let older = st.entries.len() - usize::from(is_message);
                if let Some(size) = st.drop_oldest_message(older) {
                    dropped += 1;
                    released += size;
                } else if !(over_count && st.merge_two_gaps()) {
                    break;
                }
            }
        }
        if added >= released {
            self.gauge
                .fetch_add((added - released) as u64, Ordering::Relaxed);
        } else {
            self.gauge
                .fetch_sub((released - added) as u64, Ordering::Relaxed);
        }
        self.ready.notify_one();
        dropped
    }

    /// Ends the queue: what is queued can still be read, then reads return `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next event without waiting. `Err(true)` when the queue is closed and empty,
    /// `Err(false)` when merely empty.
    pub(crate) fn try_pop(&self) -> Result<Event, bool> {
        let mut st = self.lock();
        match st.entries.pop_front() {
            Some(event) => {
                let size = size_of(&event);
                st.bytes -= size;
                if matches!(event, Event::Lagged(_)) {
                    st.markers -= 1;
                }
                drop(st);
                self.gauge.fetch_sub(size as u64, Ordering::Relaxed);
                Ok(event)
            }
            None => Err(st.closed),
        }
    }

    /// The next event, waiting for one; `None` once closed and drained.
    ///
    /// Cancel safe: an event is taken out of the queue only when it is returned.
    pub(crate) async fn pop(&self) -> Option<Event> {
        loop {
            match self.try_pop() {
                Ok(event) => return Some(event),
                Err(true) => return None,
                Err(false) => self.ready.notified().await,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        let bytes = self.lock().bytes;
        self.gauge.fetch_sub(bytes as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Payload, ReceivedMessage};

    fn message(n: usize, bytes: usize) -> Event {
        Event::Message(Arc::new(ReceivedMessage::new(
            format!("c{n}"),
            None,
            Payload::from_bytes(vec![b'x'; bytes]),
        )))
    }

    fn queue(capacity: usize, max_bytes: usize) -> EventQueue {
        EventQueue::new(capacity, max_bytes, Arc::default())
    }

    fn disconnected() -> Event {
        Event::Disconnected {
            error: "gone".into(),
        }
    }

    /// Everything queued, as short labels: `m<n>`, `L<n>`, `D`, `R`.
    fn drain(queue: &EventQueue) -> Vec<String> {
        std::iter::from_fn(|| queue.try_pop().ok())
            .map(|e| match e {
                Event::Message(m) => format!("m{}", &m.channel[1..]),
                Event::Lagged(n) => format!("L{n}"),
                Event::Disconnected { .. } => "D".into(),
                Event::Reconnected => "R".into(),
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_messages_and_reports_the_exact_count() {
        let queue = queue(3, usize::MAX);
        let dropped: u64 = (0..6).map(|n| queue.push(message(n, 1))).sum();
        assert_eq!(dropped, 3, "the lag report takes no message's place");
        assert_eq!(drain(&queue), ["L3", "m3", "m4", "m5"]);
        assert!(matches!(queue.try_pop(), Err(false)));
    }

    #[test]
    fn connection_events_are_never_dropped_and_stay_in_order() {
        // A consumer read `Disconnected`, then fell behind: `Reconnected` must survive
        // however many messages follow it.
        let queue = queue(4, usize::MAX);
        queue.push(message(0, 1));
        queue.push(disconnected());
        queue.push(Event::Reconnected);
        let dropped: u64 = (1..=20).map(|n| queue.push(message(n, 1))).sum();
        assert_eq!(dropped, 19);
        assert_eq!(drain(&queue), ["L1", "D", "R", "L18", "m19", "m20"]);
    }

    #[test]
    fn the_byte_bound_drops_old_messages_but_keeps_the_newest_whole() {
        let gauge = Arc::new(AtomicU64::new(0));
        let queue = EventQueue::new(100, 1000, Arc::clone(&gauge));
        let dropped: u64 = (0..3).map(|n| queue.push(message(n, 400))).sum();
        assert_eq!(dropped, 1);
        assert_eq!(gauge.load(Ordering::Relaxed), 800, "one was dropped");
        // One message larger than the whole budget is still queued whole.
        assert_eq!(queue.push(message(9, 5000)), 2);
        assert_eq!(gauge.load(Ordering::Relaxed), 5000);
        assert_eq!(drain(&queue), ["L3", "m9"]);
        assert_eq!(
            gauge.load(Ordering::Relaxed),
            0,
            "popping releases the bytes"
        );
        queue.push(message(1, 10));
        drop(queue);
        assert_eq!(
            gauge.load(Ordering::Relaxed),
            0,
            "dropping releases the bytes"
        );
    }

    #[test]
    fn unread_gaps_merge_so_that_only_connection_events_stay_bounded() {
        let queue = queue(2, usize::MAX);
        for _ in 0..50 {
            queue.push(disconnected());
            queue.push(message(1, 1));
            queue.push(Event::Reconnected);
        }
        let got = drain(&queue);
        assert_eq!(got.first().map(String::as_str), Some("D"));
        assert_eq!(got.last().map(String::as_str), Some("R"));
        let events = got.iter().filter(|e| !e.starts_with('L')).count();
        assert!(events <= 3, "{got:?}");
        let lagged: u64 = got
            .iter()
            .filter_map(|e| e.strip_prefix('L'))
            .map(|n| n.parse::<u64>().unwrap())
            .sum();
        let kept = got.iter().filter(|e| e.starts_with('m')).count() as u64;
        assert_eq!(
            lagged + kept,
            50,
            "every message is read or counted: {got:?}"
        );
    }

    #[test]
    fn a_closed_queue_is_drained_then_ends() {
        let queue = queue(4, usize::MAX);
        queue.push(Event::Reconnected);
        queue.close();
        assert_eq!(queue.push(Event::Reconnected), 0);
        assert_eq!(drain(&queue), ["R"], "nothing is queued after close");
        assert!(matches!(queue.try_pop(), Err(true)));
        assert!(matches!(EventQueue::closed().try_pop(), Err(true)));
    }

    #[test]
    fn memory_follows_the_backlog() {
        let queue = queue(10_000, usize::MAX);
        assert_eq!(
            queue.lock().entries.capacity(),
            0,
            "nothing before the first event"
        );
        for n in 0..100 {
            queue.push(message(n, 1));
            queue.try_pop().unwrap();
        }
        assert!(
            queue.lock().entries.capacity() < 16,
            "a consumer that keeps up"
        );
        for n in 0..20_000 {
            queue.push(message(n, 1));
        }
        assert!(
            queue.lock().entries.capacity() < 2 * 10_000,
            "never past the bound"
        );
    }

    #[tokio::test]
    async fn pop_waits_for_a_push_and_for_close() {
        let queue = Arc::new(queue(4, usize::MAX));
        let reader = {
            let queue = queue.clone();
            tokio::spawn(async move { (queue.pop().await.is_some(), queue.pop().await.is_none()) })
        };
        tokio::task::yield_now().await;
        queue.push(Event::Reconnected);
        tokio::task::yield_now().await;
        queue.close();
        let (got, ended) = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert!(got && ended);
    }
}
