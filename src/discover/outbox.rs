//! What the balancer should hold, against what it has been handed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::instance::{Instance, InstanceId};

use super::LiveHealth;

/// The endpoint set discovery wants the balancer to hold, and the changes still to hand out,
/// collapsed per instance: an instance added and removed before the balancer looks yields
/// nothing, one changed ten times yields one insert, and no endpoint is made before it is
/// handed out. Holds one slot per instance the balancer holds or should hold, nothing more.
#[derive(Default)]
pub(crate) struct Outbox {
    slots: HashMap<InstanceId, Slot>,
    /// Instances whose balancer view may be out of date, in the order they became so; each at
    /// most once.
    queue: VecDeque<InstanceId>,
    /// Slots whose `desired` is set.
    desired: usize,
}

struct Slot {
    /// The version the balancer should hold; `None`: it should hold none.
    desired: Option<Instance>,
    /// The balancer holds an endpoint for the instance.
    given: bool,
    /// The instance is in `queue`.
    queued: bool,
    /// The health the endpoint handed out reads, if its factory made it read one.
    live: Option<LiveHealth>,
}

/// Gives memory back once a map holds under a quarter of what it has room for (after a burst of
/// instances left), so what is kept follows the instances present. Amortized O(1).
pub(crate) fn shrink<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// A change to hand out.
pub(crate) enum Out {
    /// Make an endpoint for the instance and insert it.
    Insert(InstanceId, Instance),
    /// Remove the instance's endpoint.
    Remove(InstanceId),
}

impl Outbox {
    /// What the balancer should hold for `id`.
    pub(crate) fn desired(&self, id: &InstanceId) -> Option<&Instance> {
        self.slots.get(id).and_then(|s| s.desired.as_ref())
    }

    /// How many endpoints the balancer should hold.
    pub(crate) fn desired_len(&self) -> usize {
        self.desired
    }

    /// The instances the balancer should hold.
    pub(crate) fn desired_ids(&self) -> impl Iterator<Item = &InstanceId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.desired.is_some())
            .map(|(id, _)| id)
    }

    /// Makes room for `n` more instances.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        self.queue.reserve(n);
    }

    /// Whether a change waits to be handed out.
    pub(crate) fn has_changes(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The balancer should hold `instance` for `id`. A change in anything but health queues an
    /// insert; a change in health alone updates the live health of the endpoint handed out.
    pub(crate) fn insert(&mut self, id: &InstanceId, instance: Instance) {
        match self.slots.entry(id.clone()) {
            Entry::Occupied(mut e) => {
                let slot = e.get_mut();
                match &slot.desired {
                    Some(old) if !instance.differs_besides_health(old) => {
                        if let Some(live) = &slot.live {
                            live.set(instance.health());
                        }
                    }
                    old => {
                        if old.is_none() {
                            self.desired += 1;
                        }
                        if !slot.queued {
                            slot.queued = true;
                            self.queue.push_back(id.clone());
                        }
                    }
                }
                slot.desired = Some(instance);
            }
            Entry::Vacant(e) => {
                self.desired += 1;
                self.queue.push_back(id.clone());
                e.insert(Slot {
                    desired: Some(instance),
                    given: false,
                    queued: true,
                    live: None,
                });
            }
        }
    }

    /// The balancer should hold nothing for `id`.
    pub(crate) fn remove(&mut self, id: &InstanceId) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.desired.take().is_none() {
            return;
        }
        self.desired -= 1;
        slot.live = None;
        if slot.queued {
            return;
        }
        if slot.given {
            slot.queued = true;
            self.queue.push_back(id.clone());
        } else {
            self.slots.remove(id);
            shrink(&mut self.slots);
        }
    }

    /// The next change to hand out. An insert marks the instance as held by the balancer; the
    /// caller makes its endpoint and gives its live health back with
    /// [`handed`](Outbox::handed).
    pub(crate) fn next(&mut self) -> Option<Out> {
        while let Some(id) = self.queue.pop_front() {
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            slot.queued = false;
            match &slot.desired {
                Some(instance) => {
                    slot.given = true;
                    // The endpoint about to be made replaces the one that read this.
                    slot.live = None;
                    let instance = instance.clone();
                    return Some(Out::Insert(id, instance));
                }
                None => {
                    let given = slot.given;
                    self.slots.remove(&id);
                    shrink(&mut self.slots);
                    if given {
                        return Some(Out::Remove(id));
                    }
                }
            }
        }
        if self.queue.capacity() > 64 {
            // Everything was handed out: give back what a burst of changes took.
            self.queue.shrink_to(64);
        }
        None
    }

    /// The endpoint made for `id` reads `live`: keep it up to date from now on (and bring it
    /// up to date now, in case the health changed while the endpoint was being made).
    pub(crate) fn handed(&mut self, id: &InstanceId, live: LiveHealth) {
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if let Some(desired) = &slot.desired {
            live.set(desired.health());
        }
        slot.live = Some(live);
    }

    /// Slots held (for tests: it must follow the instances, not every instance ever seen).
    #[cfg(test)]
    pub(crate) fn slots(&self) -> (usize, usize) {
        (
            self.slots.len(),
            self.slots.capacity() + self.queue.capacity(),
        )
    }
}
