//! What `/events` pushes after its first `state`: a `delta` that turns the document the
//! stream sent last into the newest one, carrying only what differs.
//!
//! The protocol is described for clients in `docs/http-api.md` ("Deltas"); in short:
//! - `base` and `version`: the hub versions of the document the delta applies to and of the
//!   one it makes;
//! - `set`: every top-level field of the document other than `subscriptions` whose value
//!   changed, whole (`stats`, `version`, `numsub`, `warnings`, ...);
//! - `removed`: the names of subscribers that are gone;
//! - `subscriptions`: one entry per subscriber added or changed, in name order. An added
//!   subscriber (or one whose messages cannot be told as new ones on top of the old list)
//!   comes whole, with `messages`; a changed one comes with all its other fields and, instead
//!   of `messages`, `messages_new` (the messages that are new, newest first) and
//!   `messages_kept` (the length of the new list): its messages are
//!   `messages_new ++ old messages`, cut to `messages_kept`;
//! - `order`: every subscriber's name in document order, present only when one was added.
//!
//! Unchanged subscribers cost nothing: the dashboard reuses a subscriber's view while its
//! reading is unchanged ([`crate::state`]), so most are skipped by a pointer comparison.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::document::{MessageView, StateDocument, SubscriptionList, SubscriptionView};
use crate::openapi::{StateDelta, SubscriptionChange, SubscriptionEntry};

/// The top-level fields of `doc` other than `subscriptions`, as JSON.
pub(crate) fn top_fields(doc: &StateDocument) -> Map<String, Value> {
    let without = StateDocument {
        subscriptions: SubscriptionList::default(),
        ..doc.clone()
    };
    match serde_json::to_value(without) {
        Ok(Value::Object(mut map)) => {
            map.remove("subscriptions");
            map
        }
        _ => Map::new(),
    }
}

/// The delta from `old` (with top-level fields `old_top`) to `new` (with `new_top`), as
/// the JSON text of one `delta` event.
pub(crate) fn delta(
    old: &StateDocument,
    old_top: &Map<String, Value>,
    new: &StateDocument,
    new_top: &Map<String, Value>,
) -> String {
    let set: Map<String, Value> = new_top
        .iter()
        .filter(|(k, v)| old_top.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let mut removed: Vec<String> = Vec::new();
    let mut entries: Vec<SubscriptionEntry> = Vec::new();
    let mut added = false;
    let mut a = old.subscriptions.iter().peekable();
    for view in new.subscriptions.iter() {
        // Everything before `view` in the old list is gone.
        while let Some(before) = a.next_if(|o| o.name < view.name) {
            removed.push(before.name.clone());
        }
        match a.next_if(|o| o.name == view.name) {
            Some(before) if Arc::ptr_eq(before, view) || before == view => {}
            Some(before) => entries.push(SubscriptionEntry::Change(changed(before, view))),
            None => {
                added = true;
                entries.push(SubscriptionEntry::Whole((**view).clone()));
            }
        }
    }
    removed.extend(a.map(|o| o.name.clone()));

    let delta = StateDelta {
        base: old.version,
        version: new.version,
        set,
        removed,
        subscriptions: entries,
        order: added.then(|| new.subscriptions.iter().map(|s| s.name.clone()).collect()),
    };
    serde_json::to_string(&delta).unwrap_or_else(|_| "{}".into())
}

/// `view` as a change of `before`: all fields but `messages`, and the new messages on top
/// of `before`'s.
fn changed(before: &SubscriptionView, view: &SubscriptionView) -> SubscriptionChange {
    let fresh = new_on_top(&before.messages, &view.messages);
    SubscriptionChange {
        name: view.name.clone(),
        targets: view.targets.clone(),
        is_pattern: view.is_pattern,
        received_total: view.received_total,
        alive: view.alive,
        kind: view.kind.clone(),
        status: view.status.clone(),
        dropped_total: view.dropped_total,
        reconnects_total: view.reconnects_total,
        gaps_total: view.gaps_total,
        last_gap: view.last_gap.clone(),
        messages_new: view.messages[..fresh].to_vec(),
        messages_kept: view.messages.len() as u64,
    }
}

/// The least `k` such that `new` is `new[..k]` followed by the start of `old`: how many
/// of `new` are new (at most all of them, a whole replacement). Equal messages are
/// interchangeable (the page shows them the same), so any such `k` rebuilds `new` exactly.
fn new_on_top(old: &[MessageView], new: &[MessageView]) -> usize {
    (0..new.len())
        .find(|&k| {
            let rest = &new[k..];
            rest.len() <= old.len() && rest == &old[..rest.len()]
        })
        .unwrap_or(new.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(n: u64) -> MessageView {
        MessageView {
            channel: "c".into(),
            pattern: None,
            payload: json!(n),
            encoding: crate::document::PayloadEncodingView::Json,
            received_at_ms: n,
            size: 1,
            truncated: false,
        }
    }

    fn list(ns: &[u64]) -> Vec<MessageView> {
        ns.iter().map(|&n| message(n)).collect()
    }

    /// What a client does with `messages_new` and `messages_kept`.
    fn apply(old: &[MessageView], new: &[MessageView]) -> Vec<MessageView> {
        let k = new_on_top(old, new);
        let mut out: Vec<MessageView> = new[..k].to_vec();
        out.extend(old.iter().cloned());
        out.truncate(new.len());
        out
    }

    #[test]
    fn new_messages_are_found_on_top_of_the_old_ones() {
        let old = list(&[5, 4, 3]);
        assert_eq!(new_on_top(&old, &list(&[6, 5, 4])), 1);
        assert_eq!(new_on_top(&old, &list(&[7, 6, 5, 4, 3])), 2);
        assert_eq!(new_on_top(&old, &list(&[5, 4, 3])), 0);
        assert_eq!(new_on_top(&old, &list(&[9, 8, 7])), 3);
        assert_eq!(new_on_top(&[], &list(&[1])), 1);
        // The byte budget dropped old ones: still new ones on top.
        assert_eq!(new_on_top(&old, &list(&[6, 5])), 1);
        for new in [&[6, 5, 4][..], &[1, 1, 1], &[5, 5, 4, 3], &[], &[4, 3]] {
            assert_eq!(apply(&old, &list(new)), list(new), "{new:?}");
        }
        // Equal messages: any cut rebuilds the same list.
        let same = list(&[1, 1]);
        assert_eq!(apply(&same, &list(&[1, 1, 1])), list(&[1, 1, 1]));
    }
}
