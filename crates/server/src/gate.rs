//! The reply gate: replies wait here until the log entry they depend on is
//! durable. The engine applies an entry as soon as it is written (while the
//! fsync runs in parallel), so a reply must never leave before the fsync: a
//! client may only see what survives a crash.

use crate::message::{ReplyTo, Response};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

struct Waiting {
    position: u64,
    replies: Vec<(ReplyTo, Response)>,
}

struct Inner {
    durable: u64,
    failed: Option<String>,
    waiting: VecDeque<Waiting>,
}

pub struct Gate {
    inner: Mutex<Inner>,
    durable_changed: Condvar,
}

impl Gate {
    /// A gate for a log whose entries up to `durable` are already on disk.
    pub fn new(durable: u64) -> Gate {
        Gate {
            inner: Mutex::new(Inner { durable, failed: None, waiting: VecDeque::new() }),
            durable_changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `replies` once everything up to `position` is durable.
    pub fn release_after(&self, position: u64, replies: Vec<(ReplyTo, Response)>) {
        if replies.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if let Some(reason) = &inner.failed {
            let reason = reason.clone();
            drop(inner);
            fail_all(replies, &reason);
            return;
        }
        if position <= inner.durable {
            drop(inner);
            send_all(replies);
            return;
        }
        if let Some(last) = inner.waiting.back_mut() {
            assert!(last.position <= position, "replies are gated in log order");
            if last.position == position {
                last.replies.extend(replies);
                return;
            }
        }
        inner.waiting.push_back(Waiting { position, replies });
    }

    /// Called by the log when entries up to `position` are durable.
    pub fn durable(&self, position: u64) {
        let mut ready = Vec::new();
        {
            let mut inner = self.lock();
            assert!(position >= inner.durable, "durability went backwards: {} -> {position}", inner.durable);
            inner.durable = position;
            while inner.waiting.front().is_some_and(|w| w.position <= position) {
                ready.push(inner.waiting.pop_front().expect("front exists"));
            }
        }
        self.durable_changed.notify_all();
        for w in ready {
            send_all(w.replies);
        }
    }

    /// The log failed: nothing more becomes durable. Waiting requests get an
    /// internal error (their outcome is unknown to the client).
    pub fn fail(&self, reason: String) {
        let waiting: Vec<Waiting> = {
            let mut inner = self.lock();
            inner.failed = Some(reason.clone());
            inner.waiting.drain(..).collect()
        };
        self.durable_changed.notify_all();
        for w in waiting {
            fail_all(w.replies, &reason);
        }
    }

    pub fn durable_position(&self) -> u64 {
        self.lock().durable
    }

    /// Blocks until `position` is durable; false if the log failed.
    pub fn wait_durable(&self, position: u64) -> bool {
        let mut inner = self.lock();
        loop {
            if inner.failed.is_some() {
                return false;
            }
            if inner.durable >= position {
                return true;
            }
            inner = self.durable_changed.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn send_all(replies: Vec<(ReplyTo, Response)>) {
    for (to, response) in replies {
        // The client may have gone away; nothing to do then.
        let _ = to.send(response);
    }
}

fn fail_all(replies: Vec<(ReplyTo, Response)>, reason: &str) {
    for (to, r) in replies {
        let _ = to.send(crate::message::error_response(
            r.operation,
            r.request_id,
            bursar_proto::ProtocolError::Internal,
            &format!("the log failed; the outcome is unknown, look the ids up after restart: {reason}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn response(id: u64) -> Response {
        Response {
            operation: 3,
            status: 0,
            request_id: id,
            count: 0,
            body: Vec::new(),
            outcome: bursar_core::machine::Outcome::Executed,
            record: Vec::new(),
        }
    }

    #[test]
    fn replies_wait_for_durability_in_order() {
        let gate = Gate::new(0);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        gate.release_after(1, vec![(tx1, response(1))]);
        gate.release_after(2, vec![(tx2, response(2))]);
        assert!(rx1.try_recv().is_err(), "not durable yet");
        gate.durable(1);
        assert_eq!(rx1.try_recv().unwrap().request_id, 1);
        assert!(rx2.try_recv().is_err());
        gate.durable(2);
        assert_eq!(rx2.try_recv().unwrap().request_id, 2);
        let (tx3, mut rx3) = oneshot::channel();
        gate.release_after(2, vec![(tx3, response(3))]);
        assert_eq!(rx3.try_recv().unwrap().request_id, 3, "already durable: released at once");
        assert!(gate.wait_durable(2));
    }

    #[test]
    fn a_failed_log_fails_waiting_replies() {
        let gate = Gate::new(0);
        let (tx, mut rx) = oneshot::channel();
        gate.release_after(5, vec![(tx, response(1))]);
        gate.fail("disk gone".into());
        let r = rx.try_recv().unwrap();
        assert_eq!(r.status, bursar_proto::ProtocolError::Internal.code());
        assert!(!gate.wait_durable(5));
    }
}
