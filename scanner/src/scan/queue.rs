//! The bounded queue between the walkers and the scan workers.
//!
//! Walkers push one item per content and block while the queue is full, so memory stays bounded
//! whatever the number of files; workers take the **largest** item queued, so that big files start
//! as soon as they are seen and a huge file found early does not finish last on one core. Once
//! the walk is over the queue holds everything that is left and drains largest first, which
//! leaves small files, not one big one, for the tail.

use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex};

/// Most items waiting in the queue. At a few hundred bytes per item (a path and a handle) this
/// is a few megabytes, and it is far more than the scan threads can use at once, so the
/// largest-first order sees most of a volume.
pub const QUEUE_CAPACITY: usize = 16_384;

/// A bounded, largest-first multi-producer multi-consumer queue.
#[derive(Debug)]
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

#[derive(Debug)]
struct State<T> {
    heap: BinaryHeap<Item<T>>,
    /// Producers still pushing; the queue is over when it is 0 and the heap is empty.
    producers: usize,
    /// Push counter: equal sizes leave in the order they came (FIFO).
    seq: u64,
}

#[derive(Debug)]
struct Item<T> {
    size: u64,
    seq: u64,
    value: T,
}

impl<T> PartialEq for Item<T> {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size && self.seq == other.seq
    }
}
impl<T> Eq for Item<T> {}
impl<T> PartialOrd for Item<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Item<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Max-heap: larger size first, then the earlier push.
        self.size
            .cmp(&other.size)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl<T> WorkQueue<T> {
    /// A queue holding at most `capacity` items (at least 1), fed by `producers` producers that
    /// each call [`WorkQueue::producer_done`] when they finish.
    pub fn new(capacity: usize, producers: usize) -> Self {
        WorkQueue {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                producers,
                seq: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds an item of `size` bytes, waiting while the queue is full.
    pub fn push(&self, size: u64, value: T) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        while st.heap.len() >= self.capacity {
            st = match self.not_full.wait(st) {
                Ok(st) => st,
                Err(_) => return,
            };
        }
        let seq = st.seq;
        st.seq = st.seq.wrapping_add(1);
        st.heap.push(Item { size, seq, value });
        drop(st);
        self.not_empty.notify_one();
    }

    /// One producer has finished.
    pub fn producer_done(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.producers = st.producers.saturating_sub(1);
        }
        self.not_empty.notify_all();
    }

    /// Takes the largest item, waiting for one; `None` once every producer is done and the
    /// queue is empty.
    pub fn pop(&self) -> Option<T> {
        let mut st = self.state.lock().ok()?;
        loop {
            if let Some(item) = st.heap.pop() {
                drop(st);
                self.not_full.notify_one();
                return Some(item.value);
            }
            if st.producers == 0 {
                return None;
            }
            st = self.not_empty.wait(st).ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn largest_first_then_fifo() {
        let q = WorkQueue::new(10, 1);
        for (size, name) in [(5, "a"), (9, "b"), (5, "c"), (1, "d")] {
            q.push(size, name);
        }
        q.producer_done();
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec!["b", "a", "c", "d"]);
    }

    /// The queue never holds more than its capacity: a fast producer waits for the consumers.
    #[test]
    fn producers_wait_when_full() {
        let q = Arc::new(WorkQueue::new(4, 1));
        let seen_max = Arc::new(Mutex::new(0usize));
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..1000u64 {
                    q.push(i, i);
                }
                q.producer_done();
            })
        };
        let mut got = Vec::new();
        while let Some(v) = q.pop() {
            let len = q.state.lock().unwrap().heap.len();
            let mut m = seen_max.lock().unwrap();
            *m = (*m).max(len);
            got.push(v);
        }
        producer.join().unwrap();
        got.sort_unstable();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert!(*seen_max.lock().unwrap() <= 4);
    }
}
