//! A least-recently-used cache bounded by bytes, shared between threads.
//!
//! Decoded trees and verified chunks are immutable, so a hit can be handed out as an `Arc` without copying.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::Mutex;

pub struct LruCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    capacity: usize,
}

struct Inner<K, V> {
    map: HashMap<K, (V, usize, u64)>,
    order: BTreeMap<u64, K>,
    bytes: usize,
    tick: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> LruCache<K, V> {
    pub fn new(capacity_bytes: usize) -> Self {
        let inner = Inner {
            map: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            tick: 0,
        };
        Self {
            inner: Mutex::new(inner),
            capacity: capacity_bytes,
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        inner.tick += 1;
        let tick = inner.tick;
        let (value, _, stamp) = inner.map.get_mut(key)?;
        inner.order.remove(stamp);
        *stamp = tick;
        inner.order.insert(tick, key.clone());
        Some(value.clone())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `key` is cached, without counting as a use.
    pub fn contains(&self, key: &K) -> bool {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.map.contains_key(key)
    }

    /// Inserts `value` of roughly `size` bytes, evicting the least recently used entries beyond capacity; returns
    /// what it evicted (so that the caller may reuse their memory).
    pub fn insert(&self, key: K, value: V, size: usize) -> Vec<V> {
        let mut evicted = Vec::new();
        if size > self.capacity {
            return evicted;
        }
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((_, old_size, old_stamp)) = inner.map.insert(key.clone(), (value, size, tick)) {
            inner.order.remove(&old_stamp);
            inner.bytes -= old_size;
        }
        inner.order.insert(tick, key);
        inner.bytes += size;
        while inner.bytes > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some((v, s, _)) = inner.map.remove(&oldest) {
                inner.bytes -= s;
                evicted.push(v);
            }
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let c = LruCache::new(30);
        c.insert(1, "a", 10);
        c.insert(2, "b", 10);
        c.insert(3, "c", 10);
        assert_eq!(c.get(&1), Some("a"));
        c.insert(4, "d", 10);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&4), Some("d"));
        c.insert(5, "huge", 31);
        assert_eq!(c.get(&5), None);
    }
}
