//! A small bounded least-recently-used map for decoded format metadata (qcow2 L2 tables,
//! decompressed clusters, VHD/VHDX sector bitmaps), shared by threads behind one mutex.
//!
//! Capacities are small (tens to a few thousand entries), so eviction scans for the oldest entry
//! in O(n); what matters is that memory stays bounded whatever an image asks for.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A bounded LRU map from `K` to shared values.
#[derive(Debug)]
pub(crate) struct Lru<K, V: ?Sized> {
    inner: Mutex<LruInner<K, V>>,
}

#[derive(Debug)]
struct LruInner<K, V: ?Sized> {
    map: HashMap<K, (Arc<V>, u64)>,
    tick: u64,
    capacity: usize,
}

impl<K: Hash + Eq + Copy, V: ?Sized> Lru<K, V> {
    /// An empty map holding at most `capacity` (at least 1) entries.
    pub(crate) fn new(capacity: usize) -> Self {
        Lru {
            inner: Mutex::new(LruInner {
                map: HashMap::new(),
                tick: 0,
                capacity: capacity.max(1),
            }),
        }
    }

    /// The value for `key`, marking it recently used.
    pub(crate) fn get(&self, key: K) -> Option<Arc<V>> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.tick = g.tick.wrapping_add(1);
        let tick = g.tick;
        g.map.get_mut(&key).map(|(v, used)| {
            *used = tick;
            v.clone()
        })
    }

    /// Inserts `value` under `key`, evicting the least recently used entry when full.
    pub(crate) fn put(&self, key: K, value: Arc<V>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.map.len() >= g.capacity && !g.map.contains_key(&key) {
            if let Some(oldest) = g
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
            {
                g.map.remove(&oldest);
            }
        }
        g.tick = g.tick.wrapping_add(1);
        let tick = g.tick;
        g.map.insert(key, (value, tick));
    }

    /// The value for `key`, computing and caching it with `load` on a miss.
    pub(crate) fn get_or_load(
        &self,
        key: K,
        load: impl FnOnce() -> crate::Result<Arc<V>>,
    ) -> crate::Result<Arc<V>> {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let v = load()?;
        self.put(key, v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let l: Lru<u32, u32> = Lru::new(2);
        l.put(1, Arc::new(10));
        l.put(2, Arc::new(20));
        assert_eq!(l.get(1).as_deref(), Some(&10));
        l.put(3, Arc::new(30));
        assert!(l.get(2).is_none());
        assert_eq!(l.get(1).as_deref(), Some(&10));
        assert_eq!(l.get(3).as_deref(), Some(&30));
    }
}
