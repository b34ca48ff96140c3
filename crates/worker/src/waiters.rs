//! Which deliveries may wait for their database's lock instead of parking.
//!
//! Parking (see `consumer::park`) never holds a worker slot, but the parked copies of many jobs
//! on one database come back at random, and while none of them is there the lock sits idle: a
//! burst on one database then runs well below its serial pace, and the unlucky ones time out.
//! So one delivery per database may wait in PostgreSQL's queue for the lock (fair, and it takes
//! the lock the moment it is free), while every other one parks. In all, waiters take at most
//! half the worker's slots: the other half is always there for jobs that can run now.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use hepdb_core::DatabaseId;

/// The databases one of this worker's deliveries is waiting to lock.
#[derive(Debug, Clone, Default)]
pub struct Waiters {
    waiting: Arc<Mutex<HashSet<DatabaseId>>>,
    limit: usize,
}

impl Waiters {
    /// For a worker that runs `slots` jobs at once: at most `slots / 2` waiters.
    pub fn for_slots(slots: u16) -> Self {
        Self {
            waiting: Arc::default(),
            limit: usize::from(slots) / 2,
        }
    }

    /// Lets a delivery of `db` wait for its lock, unless another of this worker's deliveries
    /// already waits for it or the waiters are at their limit. Waiting ends with the guard.
    pub fn admit(&self, db: DatabaseId) -> Option<Waiting> {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        (waiting.len() < self.limit && waiting.insert(db)).then(|| Waiting {
            waiters: self.clone(),
            db,
        })
    }
}

/// One delivery's turn to wait for its database's lock.
#[derive(Debug)]
pub struct Waiting {
    waiters: Waiters,
    db: DatabaseId,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters
            .waiting
            .lock()
            .expect("waiters lock")
            .remove(&self.db);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_waiter_per_database_and_half_the_slots_in_all() {
        let w = Waiters::for_slots(4);
        let (a, b, c) = (DatabaseId::new(), DatabaseId::new(), DatabaseId::new());
        let first = w.admit(a).expect("the first waiter of a");
        assert!(w.admit(a).is_none(), "a second waiter of a parks");
        let other = w.admit(b).expect("b has its own waiter");
        assert!(w.admit(c).is_none(), "two of four slots wait already");
        drop(first);
        assert!(w.admit(a).is_some(), "a's turn is free again");
        drop(other);
        assert!(
            Waiters::for_slots(1).admit(a).is_none(),
            "one slot: never wait"
        );
        assert!(Waiters::default().admit(a).is_none());
    }
}
