//! Linearizability of one key's history against a register model (Wing & Gong's search with Lowe's
//! memoization, as in Porcupine).
//!
//! The register holds `None` (absent) or one value. Every value the workload writes is unique, so a value
//! names the write that produced it, and a compare-and-swap on a `ModifyIndex` becomes a compare on the value
//! written at that index (the history builder resolves it). An operation whose outcome the client never
//! learned (a timeout, an error) has no return time: it may take effect at any point after its call, or
//! never; its result is not checked. Such operations never constrain the search, so it stops as soon as
//! every completed operation is linearized.
//!
//! Invariants: the search explores each (set of linearized operations, register state) at most once, and
//! gives up (inconclusive, never "violation") after `STEP_BUDGET` steps.

use std::collections::HashSet;
use std::fmt;

/// An interned value; unique per write.
pub type Val = u32;

/// What the register must hold for a conditional write to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Always,
    /// `cas=0`: only if the key is absent.
    Absent,
    /// `cas=<ModifyIndex of this value>`.
    Is(Val),
    /// A delete with `cas=<ModifyIndex of this value>`: Consul also answers true (deleting nothing) when
    /// the key is absent.
    AbsentOr(Val),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// `value: None` deletes. `applied`: the reply's boolean, `None` if the outcome is unknown.
    Write {
        value: Option<Val>,
        cond: Cond,
        applied: Option<bool>,
    },
    /// A read that saw `seen` (only reads with a reply are recorded).
    Read { seen: Option<Val> },
}

/// One operation on one key. Times are simulated microseconds on the global (true) clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyOp {
    pub call: u64,
    /// `None`: the outcome is unknown (may have happened at any time after `call`, or never).
    pub ret: Option<u64>,
    pub op: RegOp,
    /// Index into the caller's record list, for error messages.
    pub record: usize,
}

impl KeyOp {
    fn step(&self, state: Option<Val>) -> Option<Option<Val>> {
        match self.op {
            RegOp::Read { seen } => (seen == state).then_some(state),
            RegOp::Write { value, cond, applied } => {
                let holds = holds(cond, state);
                match applied {
                    Some(true) if holds => Some(value),
                    Some(false) if !holds => Some(state),
                    None => Some(if holds { value } else { state }),
                    _ => None,
                }
            }
        }
    }
}

/// Most search steps per key before the check is declared inconclusive.
pub const STEP_BUDGET: u64 = 20_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `stuck` is the record of a completed operation that could not be placed
    /// in the deepest partial linearization the search found.
    Violation {
        stuck: usize,
        deepest: usize,
    },
    /// The search ran out of budget.
    Inconclusive,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::Violation { stuck, deepest } => write!(
                f,
                "not linearizable (deepest partial linearization places {deepest} operations, then record \
                 #{stuck} cannot be placed)"
            ),
            Verdict::Inconclusive => write!(f, "inconclusive (search budget exhausted)"),
        }
    }
}

const NIL: usize = usize::MAX;

/// A doubly linked list of call/return events in time order, with O(1) lift/unlift.
struct Events {
    /// (op index, is_call)
    kind: Vec<(usize, bool)>,
    prev: Vec<usize>,
    next: Vec<usize>,
    /// For a call node, the node of its return.
    ret_node: Vec<usize>,
    head: usize,
}

impl Events {
    fn new(ops: &[KeyOp]) -> Self {
        // Sort key: time, calls before returns at equal times (treats touching operations as concurrent,
        // which only ever allows more linearizations).
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, 0, i));
            order.push((op.ret.unwrap_or(u64::MAX), 1, i));
        }
        order.sort_unstable();
        // Node 0 is the head sentinel.
        let n = order.len() + 1;
        let mut ev = Events {
            kind: vec![(NIL, false); n],
            prev: vec![NIL; n],
            next: vec![NIL; n],
            ret_node: vec![NIL; n],
            head: 0,
        };
        let mut call_node = vec![NIL; ops.len()];
        for (pos, &(_, is_ret, i)) in order.iter().enumerate() {
            let node = pos + 1;
            ev.kind[node] = (i, is_ret == 0);
            ev.prev[node] = node - 1;
            ev.next[node - 1] = node;
            if is_ret == 0 {
                call_node[i] = node;
            } else {
                ev.ret_node[call_node[i]] = node;
            }
        }
        ev
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret_node[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.ret_node[call]);
        self.relink(call);
    }
}

/// Checks one key's history, starting from an absent key.
pub fn check(ops: &[KeyOp]) -> Verdict {
    check_with_budget(ops, STEP_BUDGET)
}

pub fn check_with_budget(ops: &[KeyOp], budget: u64) -> Verdict {
    match search(ops, budget, true) {
        // The pruned search only restricts where unknown-outcome operations go, so a linearization it finds
        // is real; a violation is confirmed by the exhaustive search.
        Verdict::Violation { stuck, deepest } => match search(ops, budget, false) {
            Verdict::Inconclusive => Verdict::Violation { stuck, deepest },
            v => v,
        },
        v => v,
    }
}

/// Whether the state change `state -> new` made by pending operation `p` is needed by a completed operation
/// that could be placed now: one that fails in `state` but not in `new`, directly or after one more pending
/// conditional write that the change makes apply (a pending delete enabling a pending create-if-absent whose
/// value is then read). Placing `p` anywhere else can be postponed without changing any completed
/// operation's outcome: its effect is either overwritten or observed later. Longer chains cannot matter:
/// a compare-and-swap names a value some completed read observed before the swap was sent, so the write of
/// that value is placed before that read already.
///
/// `origin` is the state before the chain started; a completed operation that already succeeds there can
/// go first, so only one that fails there counts.
fn enables(
    ev: &Events,
    ops: &[KeyOp],
    p: usize,
    (origin, state): (Option<Val>, Option<Val>),
    new: Option<Val>,
    depth: u32,
) -> bool {
    if new == state {
        return false;
    }
    let mut node = ev.next[ev.head];
    while node != NIL {
        let (j, is_call) = ev.kind[node];
        if !is_call {
            break;
        }
        if j != p {
            let op = &ops[j];
            let enabled = match (op.ret, op.op) {
                (Some(_), _) => op.step(origin).is_none() && op.step(new).is_some(),
                (None, RegOp::Write { cond, .. }) if depth > 0 && holds(cond, new) && !holds(cond, state) => op
                    .step(new)
                    .is_some_and(|next| enables(ev, ops, j, (origin, new), next, depth - 1)),
                (None, _) => false,
            };
            if enabled {
                return true;
            }
        }
        node = ev.next[node];
    }
    false
}

fn holds(cond: Cond, state: Option<Val>) -> bool {
    match cond {
        Cond::Always => true,
        Cond::Absent => state.is_none(),
        Cond::Is(v) => state == Some(v),
        Cond::AbsentOr(v) => state.is_none() || state == Some(v),
    }
}

fn search(ops: &[KeyOp], budget: u64, pruned: bool) -> Verdict {
    let mut ev = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<Val>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Val>)> = Vec::new();
    let mut state: Option<Val> = None;
    let mut remaining = ops.iter().filter(|o| o.ret.is_some()).count();
    let (mut deepest, mut stuck) = (0usize, NIL);
    let mut entry = ev.next[ev.head];
    let mut steps = 0u64;
    while remaining > 0 {
        steps += 1;
        if steps > budget {
            if std::env::var_os("SIM_DEBUG_INCONCLUSIVE").is_some() {
                let recs: Vec<usize> = stack.iter().map(|&(c, _)| ops[ev.kind[c].0].record).collect();
                eprintln!(
                    "pruned={pruned} budget hit: deepest {deepest} stuck #{stuck} stack now {recs:?} cache {}",
                    cache.len()
                );
            }
            return Verdict::Inconclusive;
        }
        let (i, is_call) = ev.kind[entry];
        if is_call {
            let step = ops[i].step(state);
            // An operation of unknown outcome can take effect at any later time, so placing it is only worth
            // trying right before an operation that its effect enables (see `enables`).
            let useful =
                |new: Option<Val>| ops[i].ret.is_some() || (pruned && enables(&ev, ops, i, (state, state), new, 1));
            let step = step.filter(|&new| !pruned || useful(new));
            if let Some(new_state) = step {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    stack.push((entry, state));
                    state = new_state;
                    ev.lift(entry);
                    if ops[i].ret.is_some() {
                        remaining -= 1;
                    }
                    entry = ev.next[ev.head];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = ev.next[entry];
        } else {
            // A return whose call was never placed: undo the last placement.
            if stuck == NIL || stack.len() > deepest {
                deepest = stack.len();
                stuck = ops[i].record;
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Verdict::Violation { stuck, deepest };
            };
            let j = ev.kind[call].0;
            linearized[j / 64] &= !(1 << (j % 64));
            if ops[j].ret.is_some() {
                remaining += 1;
            }
            state = prev_state;
            ev.unlift(call);
            entry = ev.next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(call: u64, ret: Option<u64>, value: Option<Val>, cond: Cond, applied: Option<bool>) -> KeyOp {
        KeyOp {
            call,
            ret,
            op: RegOp::Write { value, cond, applied },
            record: 0,
        }
    }
    fn put(call: u64, ret: u64, v: Val) -> KeyOp {
        w(call, Some(ret), Some(v), Cond::Always, Some(true))
    }
    fn put_unknown(call: u64, v: Val) -> KeyOp {
        w(call, None, Some(v), Cond::Always, None)
    }
    fn get(call: u64, ret: u64, seen: Option<Val>) -> KeyOp {
        KeyOp {
            call,
            ret: Some(ret),
            op: RegOp::Read { seen },
            record: 0,
        }
    }
    fn numbered(mut ops: Vec<KeyOp>) -> Vec<KeyOp> {
        for (i, op) in ops.iter_mut().enumerate() {
            op.record = i;
        }
        ops
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![put(0, 1, 1), get(2, 3, Some(1)), put(4, 5, 2), get(6, 7, Some(2))];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_a_completed_write_is_not() {
        let h = numbered(vec![put(0, 1, 1), put(2, 3, 2), get(4, 5, Some(1))]);
        assert!(
            matches!(check(&h), Verdict::Violation { stuck: 2, .. }),
            "{:?}",
            check(&h)
        );
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        let h = vec![
            put(0, 1, 1),
            put(2, 10, 2),
            get(3, 4, Some(1)),
            get(5, 6, Some(2)),
            get(11, 12, Some(2)),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn reads_must_not_go_back_in_time_within_a_write() {
        // Both reads overlap the write, but the second starts after the first returned the new value.
        let h = vec![put(0, 1, 1), put(2, 10, 2), get(3, 4, Some(2)), get(5, 6, Some(1))];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_a_violation() {
        let h = vec![put(0, 1, 1), get(2, 3, Some(9))];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_outcome_may_take_effect_late() {
        // The timed-out write is seen long after its call.
        let h = vec![
            put(0, 1, 1),
            put_unknown(2, 2),
            get(3, 4, Some(1)),
            get(50, 51, Some(2)),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcome_may_never_take_effect() {
        let h = vec![put(0, 1, 1), put_unknown(2, 2), get(50, 51, Some(1))];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcome_cannot_take_effect_twice_or_before_its_call() {
        // Seen, then the older value again: the write cannot be undone.
        let h = vec![put(0, 1, 1), put_unknown(2, 2), get(3, 4, Some(2)), get(5, 6, Some(1))];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
        // Seen before it was called.
        let h = vec![put(0, 1, 1), get(2, 3, Some(2)), put_unknown(4, 2)];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn compare_and_swap_success_and_failure() {
        let ok = vec![
            put(0, 1, 1),
            w(2, Some(3), Some(2), Cond::Is(1), Some(true)),
            w(4, Some(5), Some(3), Cond::Is(1), Some(false)),
            get(6, 7, Some(2)),
        ];
        assert_eq!(check(&ok), Verdict::Linearizable);
        // Two CAS from the same expected value cannot both succeed.
        let bad = vec![
            put(0, 1, 1),
            w(2, Some(3), Some(2), Cond::Is(1), Some(true)),
            w(4, Some(5), Some(3), Cond::Is(1), Some(true)),
        ];
        assert!(matches!(check(&bad), Verdict::Violation { .. }));
        // A failed CAS while the expected value was certainly there.
        let bad = vec![
            put(0, 1, 1),
            w(2, Some(3), Some(2), Cond::Is(1), Some(false)),
            get(4, 5, Some(1)),
        ];
        assert!(matches!(check(&bad), Verdict::Violation { .. }));
    }

    #[test]
    fn create_only_if_absent_and_delete() {
        let ok = vec![
            w(0, Some(1), Some(1), Cond::Absent, Some(true)),
            w(2, Some(3), Some(2), Cond::Absent, Some(false)),
            w(4, Some(5), None, Cond::Always, Some(true)),
            get(6, 7, None),
            w(8, Some(9), Some(3), Cond::Absent, Some(true)),
        ];
        assert_eq!(check(&ok), Verdict::Linearizable);
        let bad = vec![
            w(0, Some(1), None, Cond::Always, Some(true)),
            w(2, Some(3), Some(2), Cond::Absent, Some(false)),
        ];
        assert!(matches!(check(&bad), Verdict::Violation { .. }));
    }

    #[test]
    fn unknown_cas_applies_only_if_its_condition_held() {
        // A timed-out CAS expecting 1 while 5 was in place cannot have produced 2.
        let h = vec![
            put(0, 1, 5),
            w(2, None, Some(2), Cond::Is(1), None),
            get(10, 11, Some(2)),
        ];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn many_concurrent_unknown_writes_stay_fast() {
        // 40 timed-out writes in flight while 200 reads observe them in call order.
        let mut h = Vec::new();
        for v in 0..40u32 {
            h.push(put_unknown(u64::from(v), v + 1));
        }
        for r in 0..200u64 {
            let seen = (r / 5 + 1).min(40) as Val;
            h.push(get(1000 + r * 10, 1000 + r * 10 + 5, Some(seen)));
        }
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn delete_with_cas_succeeds_on_an_absent_key() {
        // Consul: DELETE ?cas=n of an absent key answers true.
        let h = vec![
            put(0, 1, 1),
            w(2, Some(3), None, Cond::Always, Some(true)),
            w(4, Some(5), None, Cond::AbsentOr(1), Some(true)),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
        let h = vec![
            put(0, 1, 1),
            put(2, 3, 2),
            w(4, Some(5), None, Cond::AbsentOr(1), Some(true)),
        ];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn a_chain_of_two_unknown_outcomes_is_found() {
        // A timed-out delete, then a timed-out create-if-absent, explain a later read of the created value.
        let h = vec![
            put(0, 1, 1),
            w(2, None, None, Cond::Always, None),
            w(3, None, Some(2), Cond::Absent, None),
            get(10, 11, Some(2)),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn pending_noise_does_not_blow_up_the_search() {
        // Fifty timed-out writes of every kind stay pending while later completed operations run.
        let mut h = vec![put(0, 1, 1)];
        for i in 0..50u32 {
            let t = 10 + u64::from(i);
            h.push(match i % 4 {
                0 => put_unknown(t, 100 + i),
                1 => w(t, None, None, Cond::Always, None),
                2 => w(t, None, Some(100 + i), Cond::Absent, None),
                _ => w(t, None, None, Cond::AbsentOr(1), None),
            });
        }
        h.push(w(100, Some(110), Some(2), Cond::Is(1), Some(true)));
        h.push(w(100, Some(110), None, Cond::AbsentOr(7), Some(false)));
        h.push(put(100, 110, 3));
        h.push(w(100, Some(110), None, Cond::Always, Some(true)));
        h.push(get(120, 121, None));
        assert_eq!(check_with_budget(&h, 100_000), Verdict::Linearizable);
    }

    #[test]
    fn the_exhaustive_search_gives_up_but_the_pruned_one_decides() {
        let mut h = Vec::new();
        for v in 0..30u32 {
            h.push(put_unknown(0, v + 1));
        }
        h.push(get(100, 101, Some(999)));
        assert_eq!(search(&h, 1000, false), Verdict::Inconclusive);
        // The pruned search settles it at once.
        assert!(matches!(check_with_budget(&h, 1000), Verdict::Violation { .. }));
    }
}
