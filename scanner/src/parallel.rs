//! Scheduling of per-file work on a rayon pool.
//!
//! Work lists are sorted largest first so that a huge file starts early instead of finishing
//! last on one thread. Rayon's adaptive splitting would then undo that: with few threads it hands
//! each thread one contiguous half of the list and splits further only when work is stolen, so
//! one thread gets every large file in turn. Making every item its own task (`with_max_len(1)`)
//! lets idle threads take the next large file as soon as they are free.

use rayon::prelude::*;

/// Maps `f` over `items` in parallel on the current rayon pool, one task per item, keeping the
/// order of `items` in the result.
pub fn map_each<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync + Send,
{
    items.par_iter().with_max_len(1).map(f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Regression: `coldscan ls --hash` and `scan` ran every large file of a largest-first list
    /// on one thread (rayon gave that thread the whole first half of the list). Here the first
    /// two items (the "largest") each wait until the other has started: that completes only if
    /// they run at the same time on the two threads of the pool.
    #[test]
    fn largest_items_at_the_head_run_concurrently() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let items: Vec<usize> = (0..64).collect();
        let (tx0, rx0) = mpsc::channel::<()>();
        let (tx1, rx1) = mpsc::channel::<()>();
        let channels = Mutex::new((Some((tx0, rx1)), Some((tx1, rx0))));
        let results = pool.install(|| {
            map_each(&items, |&i| {
                if i > 1 {
                    return true;
                }
                let (tx, rx) = {
                    let mut c = channels.lock().unwrap();
                    if i == 0 { c.0.take() } else { c.1.take() }.unwrap()
                };
                tx.send(()).unwrap();
                // Bounded: a serialised schedule fails the test instead of hanging it.
                rx.recv_timeout(Duration::from_secs(20)).is_ok()
            })
        });
        assert_eq!(results.len(), 64);
        assert!(
            results[0] && results[1],
            "items 0 and 1 did not run concurrently"
        );
    }
}
