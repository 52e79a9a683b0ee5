//! [`EventList`]: the calls and returns of a history in time order, in a doubly linked
//! list from which a linearized operation's two events are lifted and put back.

use super::Entry;

/// A call or a return, in a doubly linked list in time order (slot 0 is the head).
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) entry: usize,
    pub(super) is_call: bool,
    /// The other event of the same entry.
    partner: usize,
    prev: usize,
    next: usize,
}

pub(super) struct EventList {
    pub(super) events: Vec<Event>,
}

impl EventList {
    pub(super) fn new<Op>(entries: &[Entry<Op>]) -> Self {
        // Times, with calls before returns at equal times: two operations that touch are
        // taken as concurrent, which never rejects a valid history.
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
        for (index, entry) in entries.iter().enumerate() {
            order.push((entry.call, false, index));
            order.push((entry.ret.unwrap_or(u64::MAX), true, index));
        }
        order.sort_unstable();
        let head = Event { entry: usize::MAX, is_call: false, partner: 0, prev: 0, next: 0 };
        let mut events = vec![head];
        let mut slots = vec![[0_usize; 2]; entries.len()];
        for (position, (_, is_return, entry)) in order.into_iter().enumerate() {
            let slot = position + 1;
            slots[entry][usize::from(is_return)] = slot;
            events.push(Event { entry, is_call: !is_return, partner: 0, prev: slot - 1, next: 0 });
        }
        let count = events.len();
        for (slot, event) in events.iter_mut().enumerate() {
            event.next = if slot + 1 < count { slot + 1 } else { 0 };
        }
        events[0].prev = count - 1;
        for [call, ret] in slots {
            events[call].partner = ret;
            events[ret].partner = call;
        }
        Self { events }
    }

    pub(super) fn first(&self) -> Option<usize> {
        self.next(0)
    }

    pub(super) fn next(&self, slot: usize) -> Option<usize> {
        Some(self.events[slot].next).filter(|next| *next != 0)
    }

    fn unlink(&mut self, slot: usize) {
        let Event { prev, next, .. } = self.events[slot];
        self.events[prev].next = next;
        self.events[next].prev = prev;
    }

    fn relink(&mut self, slot: usize) {
        let Event { prev, next, .. } = self.events[slot];
        self.events[prev].next = slot;
        self.events[next].prev = slot;
    }

    /// Takes a call and its return out of the list.
    pub(super) fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.events[call].partner);
    }

    /// Puts back what [`EventList::lift`] took out, in reverse order.
    pub(super) fn unlift(&mut self, call: usize) {
        self.relink(self.events[call].partner);
        self.relink(call);
    }
}
