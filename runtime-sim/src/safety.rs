//! Raft safety, checked on every event as it happens: at most one leader per term, and every node applies
//! the same sequence (same index ⇒ same term and same rolling digest, on every node, ever — which also
//! proves that a committed entry never changes). Per node and per incarnation, the applied index never goes
//! back; across indexes, terms never decrease (log matching).

use concord_core::{Event, NodeId};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct SafetyChecker {
    /// term -> (leader, first node that reported it)
    leaders: BTreeMap<u64, (NodeId, NodeId)>,
    /// index -> (term, digest, first node that applied it)
    applied: BTreeMap<u64, (u64, u64, NodeId)>,
    /// Per node incarnation: last applied index (a restarted node applies again from its snapshot).
    last_applied: BTreeMap<(NodeId, u64), u64>,
    violation: Option<String>,
    pub leader_changes: u64,
    pub applied_events: u64,
}

impl SafetyChecker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first violation seen, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    fn fail(&mut self, msg: String) {
        if self.violation.is_none() {
            self.violation = Some(msg);
        }
    }

    /// Terms in which some node saw a leader.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders.len()
    }

    /// The highest index any node applied, with its digest.
    pub fn highest_applied(&self) -> Option<(u64, u64)> {
        self.applied.iter().next_back().map(|(&i, &(_, d, _))| (i, d))
    }

    /// The digest every node must report for `index`, if some node applied it.
    pub fn digest_at(&self, index: u64) -> Option<u64> {
        self.applied.get(&index).map(|&(_, d, _)| d)
    }

    /// `incarnation` counts the node's restarts: each one starts applying afresh.
    pub fn on_event(&mut self, at_us: u64, node: NodeId, incarnation: u64, event: &Event) {
        match *event {
            Event::LeaderChanged {
                term,
                leader: Some(leader),
            } => {
                self.leader_changes += 1;
                match self.leaders.get(&term) {
                    Some(&(l, by)) if l != leader => self.fail(format!(
                        "two leaders in term {term}: {by:?} saw {l:?}, {node:?} saw {leader:?} (at {:.3}s)",
                        at_us as f64 / 1e6
                    )),
                    Some(_) => {}
                    None => {
                        self.leaders.insert(term, (leader, node));
                    }
                }
            }
            Event::Applied { index, term, digest } => {
                self.applied_events += 1;
                self.on_applied(at_us, (node, incarnation), index, term, digest);
            }
            _ => {}
        }
    }

    fn on_applied(&mut self, at_us: u64, source: (NodeId, u64), index: u64, term: u64, digest: u64) {
        let at = at_us as f64 / 1e6;
        let node = source.0;
        if let Some(&prev) = self.last_applied.get(&source) {
            if index < prev {
                self.fail(format!("{node:?} applied index {index} after {prev} (at {at:.3}s)"));
            }
        }
        self.last_applied.insert(source, index);
        match self.applied.get(&index) {
            Some(&(t, d, by)) => {
                if (t, d) != (term, digest) {
                    self.fail(format!(
                        "nodes applied different sequences: at index {index} {by:?} has term {t} digest {d:#x}, \
                         {node:?} has term {term} digest {digest:#x} (at {at:.3}s)"
                    ));
                }
            }
            None => {
                if let Some((&i, &(t, _, by))) = self.applied.range(..index).next_back() {
                    if t > term {
                        self.fail(format!(
                            "terms go back along the log: {by:?} applied index {i} of term {t}, {node:?} applied \
                             index {index} of term {term} (at {at:.3}s)"
                        ));
                    }
                }
                if let Some((&i, &(t, _, by))) = self.applied.range(index + 1..).next() {
                    if t < term {
                        self.fail(format!(
                            "terms go back along the log: {node:?} applied index {index} of term {term}, {by:?} \
                             applied index {i} of term {t} (at {at:.3}s)"
                        ));
                    }
                }
                self.applied.insert(index, (term, digest, node));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn applied(index: u64, term: u64, digest: u64) -> Event {
        Event::Applied { index, term, digest }
    }

    #[test]
    fn agreeing_nodes_pass() {
        let mut c = SafetyChecker::new();
        c.on_event(
            0,
            A,
            0,
            &Event::LeaderChanged {
                term: 1,
                leader: Some(A),
            },
        );
        c.on_event(
            0,
            B,
            0,
            &Event::LeaderChanged {
                term: 1,
                leader: Some(A),
            },
        );
        c.on_event(0, B, 0, &Event::LeaderChanged { term: 2, leader: None });
        for (i, t) in [(1, 1), (2, 1), (5, 2)] {
            c.on_event(0, A, 0, &applied(i, t, i * 10));
            c.on_event(0, B, 0, &applied(i, t, i * 10));
        }
        assert_eq!(c.violation(), None);
        assert_eq!(c.highest_applied(), Some((5, 50)));
    }

    #[test]
    fn two_leaders_in_one_term_fail() {
        let mut c = SafetyChecker::new();
        c.on_event(
            0,
            A,
            0,
            &Event::LeaderChanged {
                term: 3,
                leader: Some(A),
            },
        );
        c.on_event(
            0,
            B,
            0,
            &Event::LeaderChanged {
                term: 3,
                leader: Some(B),
            },
        );
        assert!(c.violation().unwrap().contains("two leaders in term 3"));
    }

    #[test]
    fn diverging_digests_fail() {
        let mut c = SafetyChecker::new();
        c.on_event(0, A, 0, &applied(4, 1, 99));
        c.on_event(0, B, 0, &applied(4, 1, 98));
        assert!(c.violation().unwrap().contains("different sequences"));
    }

    #[test]
    fn applied_index_going_back_fails_unless_restarted() {
        let mut c = SafetyChecker::new();
        c.on_event(0, A, 0, &applied(4, 1, 4));
        c.on_event(0, A, 1, &applied(2, 1, 2));
        assert_eq!(c.violation(), None);
        c.on_event(0, A, 1, &applied(1, 1, 1));
        assert!(c.violation().unwrap().contains("applied index 1 after 2"));
    }

    #[test]
    fn terms_going_back_along_the_log_fail() {
        let mut c = SafetyChecker::new();
        c.on_event(0, A, 0, &applied(4, 3, 4));
        c.on_event(0, B, 0, &applied(6, 2, 6));
        assert!(c.violation().unwrap().contains("terms go back"));
    }
}
