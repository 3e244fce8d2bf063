//! Replay protection for cluster entries.
//!
//! A sealed entry's MAC proves a replica proposed it, not that it is new:
//! anyone who can read the log stream could publish an old message again
//! under a fresh message id, and JetStream would store it. So the state
//! remembers, per proposing replica, which proposals it already applied:
//!
//! - each run of a replica has a `boot` number, strictly greater than its
//!   earlier runs' (the engine picks it above what the state has seen);
//!   a proposal from an older run than the newest seen is refused, which
//!   also drops messages a dead run left in a broker's buffers;
//! - within a run, proposal numbers increase; the newest [`WINDOW`]
//!   numbers are kept as a bitmap, so a proposal is applied at most once,
//!   one older than the window is refused (the engine never has that many
//!   in flight), and reordering inside the window is fine.
//!
//! All of it is a function of the log, so every replica and every replay
//! refuses the same entries.

use crate::entry::{Origin, RejectReason};
use crate::limits::PROPOSERS_MAX;
use std::collections::BTreeMap;

/// Proposal numbers remembered per run: far more than a replica can have
/// unconfirmed (its publisher has at most a few hundred in flight).
pub const WINDOW: u64 = 1 << 16;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    boot: u64,
    /// The highest proposal number applied in this run.
    highest: u64,
    /// Bit `p % WINDOW` is set when proposal `p` (within the window) was applied.
    seen: Box<[u64]>,
}

impl Window {
    fn new(boot: u64, proposal: u64) -> Window {
        let mut w = Window { boot, highest: proposal, seen: vec![0; WORDS].into_boxed_slice() };
        w.set(proposal);
        w
    }

    fn bit(p: u64) -> (usize, u64) {
        let i = p % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, p: u64) {
        let (word, mask) = Window::bit(p);
        self.seen[word] |= mask;
    }

    fn is_set(&self, p: u64) -> bool {
        let (word, mask) = Window::bit(p);
        self.seen[word] & mask != 0
    }

    fn clear(&mut self, p: u64) {
        let (word, mask) = Window::bit(p);
        self.seen[word] &= !mask;
    }

    fn admit(&mut self, proposal: u64) -> Result<(), RejectReason> {
        if proposal > self.highest {
            // Numbers that fall out of the window share bits with the new ones.
            if proposal - self.highest >= WINDOW {
                self.seen.fill(0);
            } else {
                for p in self.highest + 1..proposal {
                    self.clear(p);
                }
            }
            self.highest = proposal;
            self.set(proposal);
            return Ok(());
        }
        if self.highest - proposal >= WINDOW {
            return Err(RejectReason::TooOld);
        }
        if self.is_set(proposal) {
            return Err(RejectReason::Replayed);
        }
        self.set(proposal);
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proposers {
    by_node: BTreeMap<u32, Window>,
    /// Cluster entries refused so far (any reason), for reports.
    refused: u64,
}

impl Proposers {
    /// Accepts a proposal the first time it is seen, refuses it afterwards.
    pub fn admit(&mut self, origin: &Origin) -> Result<(), RejectReason> {
        let tracked = self.by_node.len();
        match self.by_node.get_mut(&origin.node) {
            None if tracked >= PROPOSERS_MAX => Err(RejectReason::TooManyProposers),
            None => {
                self.by_node.insert(origin.node, Window::new(origin.boot, origin.proposal));
                Ok(())
            }
            Some(w) if origin.boot < w.boot => Err(RejectReason::StaleBoot),
            Some(w) if origin.boot > w.boot => {
                *w = Window::new(origin.boot, origin.proposal);
                Ok(())
            }
            Some(w) => w.admit(origin.proposal),
        }
    }

    /// The newest run of `node` seen, if any: a restarted replica picks a
    /// greater boot number.
    pub fn boot(&self, node: u32) -> Option<u64> {
        self.by_node.get(&node).map(|w| w.boot)
    }

    /// Counts a refused cluster entry.
    pub fn count_refusal(&mut self) {
        self.refused += 1;
    }

    /// Cluster entries refused so far: forged, damaged, replayed or stale.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }

    /// `count u32`, `refused u64`, then per node in id order: node u32,
    /// boot u64, highest u64, the window's bitmap.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.by_node.len() * (20 + WORDS * 8));
        out.extend_from_slice(&(self.by_node.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.refused.to_le_bytes());
        for (node, w) in &self.by_node {
            out.extend_from_slice(&node.to_le_bytes());
            out.extend_from_slice(&w.boot.to_le_bytes());
            out.extend_from_slice(&w.highest.to_le_bytes());
            for word in w.seen.iter() {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Proposers, crate::error::DecodeError> {
        use crate::error::DecodeError;
        let mut c = crate::cursor::Cursor::new(bytes);
        let count = c.u32()? as usize;
        if count > PROPOSERS_MAX {
            return Err(DecodeError::TooMany { what: "proposers", count: count as u64, max: PROPOSERS_MAX as u64 });
        }
        let refused = c.u64()?;
        let mut by_node = BTreeMap::new();
        for _ in 0..count {
            let node = c.u32()?;
            let (boot, highest) = (c.u64()?, c.u64()?);
            let seen = (0..WORDS).map(|_| c.u64()).collect::<Result<Vec<_>, _>>()?.into_boxed_slice();
            let window = Window { boot, highest, seen };
            if !window.is_set(highest) {
                return Err(DecodeError::NewestProposalUnseen { node });
            }
            if by_node.insert(node, window).is_some() {
                return Err(DecodeError::StoredTwice { what: "node", id: u128::from(node) });
            }
        }
        c.finish()?;
        Ok(Proposers { by_node, refused })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn o(node: u32, boot: u64, proposal: u64) -> Origin {
        Origin { node, key_id: 1, boot, proposal }
    }

    #[test]
    fn each_proposal_is_admitted_once() {
        let mut p = Proposers::default();
        assert_eq!(p.admit(&o(1, 10, 5)), Ok(()));
        assert_eq!(p.admit(&o(1, 10, 5)), Err(RejectReason::Replayed));
        assert_eq!(p.admit(&o(1, 10, 3)), Ok(()), "reordered within the window");
        assert_eq!(p.admit(&o(1, 10, 3)), Err(RejectReason::Replayed));
        assert_eq!(p.admit(&o(2, 7, 5)), Ok(()), "another node has its own window");
        assert_eq!(p.admit(&o(1, 9, 100)), Err(RejectReason::StaleBoot));
        assert_eq!(p.admit(&o(1, 11, 1)), Ok(()), "a new run starts over");
        assert_eq!(p.admit(&o(1, 10, 6)), Err(RejectReason::StaleBoot), "the old run is over");
        assert_eq!(p.boot(1), Some(11));
        assert_eq!(p.admit(&o(1, 11, 1 + WINDOW)), Ok(()));
        assert_eq!(p.admit(&o(1, 11, 1)), Err(RejectReason::TooOld));
        assert_eq!(p.admit(&o(1, 11, 2)), Ok(()), "inside the window again");
        p.count_refusal();
        let restored = Proposers::decode(&p.encode()).unwrap();
        assert_eq!(restored, p);
    }

    #[test]
    fn the_tracked_replicas_are_bounded() {
        let mut p = Proposers::default();
        for node in 0..PROPOSERS_MAX as u32 {
            p.admit(&o(node, 1, 1)).unwrap();
        }
        assert_eq!(p.admit(&o(u32::MAX, 1, 1)), Err(RejectReason::TooManyProposers));
        assert_eq!(p.admit(&o(0, 2, 1)), Ok(()), "known nodes still propose");
    }

    #[test]
    fn damaged_encodings_are_errors() {
        let mut p = Proposers::default();
        p.admit(&o(4, 1, 9)).unwrap();
        let bytes = p.encode();
        for cut in 0..bytes.len() {
            assert!(Proposers::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut unmarked = bytes.clone();
        unmarked[28..].fill(0);
        assert!(Proposers::decode(&unmarked).is_err());
        let mut twice = (2u32).to_le_bytes().to_vec();
        twice.extend_from_slice(&bytes[4..12]);
        twice.extend_from_slice(&bytes[12..]);
        twice.extend_from_slice(&bytes[12..]);
        assert!(Proposers::decode(&twice).is_err());
    }

    proptest! {
        /// Against a set of every (boot, proposal) ever admitted: nothing is
        /// admitted twice, and a fresh proposal of the newest run within the
        /// window is never refused.
        #[test]
        fn never_admits_twice(ops in proptest::collection::vec((0u64..3, 0u64..200_000), 1..400)) {
            let mut p = Proposers::default();
            let mut admitted = std::collections::HashSet::new();
            let mut newest: Option<(u64, u64)> = None; // (boot, highest)
            for (boot, proposal) in ops {
                let seen_before = admitted.contains(&(boot, proposal));
                let must_admit = !seen_before
                    && newest.is_none_or(|(b, h)| boot > b || (boot == b && proposal + WINDOW > h));
                let result = p.admit(&o(1, boot, proposal));
                if result.is_ok() {
                    prop_assert!(!seen_before, "admitted twice: {boot}/{proposal}");
                    admitted.insert((boot, proposal));
                    newest = Some(match newest {
                        Some((b, h)) if b == boot => (b, h.max(proposal)),
                        _ => (boot, proposal),
                    });
                } else {
                    prop_assert!(!must_admit, "refused fresh {boot}/{proposal} at {newest:?}: {result:?}");
                }
            }
        }
    }
}
