//! One consumer's bounded event queue.
//!
//! The socket reader pushes and never waits; when the queue is full the oldest event is
//! dropped and counted, and the consumer's next read is [`Event::Lagged`] with that count,
//! as with tokio's `broadcast`. Unlike `broadcast`, which allocates every slot when the
//! channel is made (about 48 KiB at the default capacity), the queue grows only as far as
//! its consumer ever fell behind (never past the bound), so ten thousand consumers that keep
//! up cost almost nothing. It does not shrink again: a queue that drains and refills in
//! bursts would otherwise reallocate on every burst.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::subscription::Event;

pub(crate) struct EventQueue {
    capacity: usize,
    state: Mutex<QueueState>,
    /// Woken on every push and on close; one consumer reads a queue, so a stored permit
    /// cannot be lost.
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Event>,
    /// Dropped since the consumer last read a `Lagged`.
    missed: u64,
    closed: bool,
}

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        EventQueue {
            capacity: capacity.max(1),
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
        }
    }

    /// A queue that is already at its end.
    pub(crate) fn closed() -> Self {
        let queue = EventQueue::new(1);
        queue.close();
        queue
    }

    /// Appends `event`, dropping the oldest one if full. Returns true if one was dropped.
    /// Never waits.
    pub(crate) fn push(&self, event: Event) -> bool {
        let dropped = {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            let dropped = st.events.len() >= self.capacity;
            if dropped {
                st.events.pop_front();
                st.missed += 1;
            }
            st.events.push_back(event);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// Ends the queue: what is queued can still be read, then reads return `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next event without waiting: a pending lag report first, then the oldest event.
    /// `Err(true)` when the queue is closed and empty, `Err(false)` when merely empty.
    pub(crate) fn try_pop(&self) -> Result<Event, bool> {
        let mut st = self.lock();
        if st.missed > 0 {
            return Ok(Event::Lagged(std::mem::take(&mut st.missed)));
        }
        match st.events.pop_front() {
            Some(event) => Ok(event),
            None => Err(st.closed),
        }
    }

    /// The next event, waiting for one; `None` once closed and drained.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnected(queue: &EventQueue) -> bool {
        matches!(queue.try_pop(), Ok(Event::Reconnected))
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_reports_the_exact_count() {
        let queue = EventQueue::new(2);
        assert!(!queue.push(Event::Lagged(100)));
        assert!(!queue.push(Event::Reconnected));
        assert!(queue.push(Event::Reconnected));
        assert!(queue.push(Event::Reconnected));
        assert!(matches!(queue.try_pop(), Ok(Event::Lagged(2))));
        assert!(reconnected(&queue) && reconnected(&queue));
        assert!(matches!(queue.try_pop(), Err(false)));
    }

    #[test]
    fn a_closed_queue_is_drained_then_ends() {
        let queue = EventQueue::new(4);
        queue.push(Event::Reconnected);
        queue.close();
        assert!(
            !queue.push(Event::Reconnected),
            "nothing is queued after close"
        );
        assert!(reconnected(&queue));
        assert!(matches!(queue.try_pop(), Err(true)));
        assert!(matches!(EventQueue::closed().try_pop(), Err(true)));
    }

    #[test]
    fn memory_follows_the_backlog() {
        let queue = EventQueue::new(10_000);
        assert_eq!(
            queue.lock().events.capacity(),
            0,
            "nothing before the first event"
        );
        for _ in 0..100 {
            queue.push(Event::Reconnected);
            queue.try_pop().unwrap();
        }
        assert!(
            queue.lock().events.capacity() < 16,
            "a consumer that keeps up"
        );
        for _ in 0..20_000 {
            queue.push(Event::Reconnected);
        }
        assert!(
            queue.lock().events.capacity() < 2 * 10_000,
            "never past the bound"
        );
    }

    #[tokio::test]
    async fn pop_waits_for_a_push_and_for_close() {
        let queue = std::sync::Arc::new(EventQueue::new(4));
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
