//! A small-integer-keyed map for per-descriptor and per-operation backend state.

/// A map from small integers (descriptor numbers, operation keys) to values, stored in a
/// vector indexed by the key: no hashing on the per-operation path.
pub(crate) struct DenseMap<V> {
    slots: Vec<Option<V>>,
    len: usize,
}

impl<V> Default for DenseMap<V> {
    fn default() -> Self {
        DenseMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<V> DenseMap<V> {
    pub(crate) fn get(&self, k: usize) -> Option<&V> {
        self.slots.get(k).and_then(Option::as_ref)
    }

    // Per-descriptor state of the readiness backend (Unix).
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn get_mut(&mut self, k: usize) -> Option<&mut V> {
        self.slots.get_mut(k).and_then(Option::as_mut)
    }

    pub(crate) fn insert(&mut self, k: usize, v: V) -> Option<V> {
        if k >= self.slots.len() {
            self.slots.resize_with(k + 1, || None);
        }
        let old = self.slots[k].replace(v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, k: usize) -> Option<V> {
        let old = self.slots.get_mut(k).and_then(Option::take);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn get_or_default(&mut self, k: usize) -> &mut V
    where
        V: Default,
    {
        if self.get(k).is_none() {
            self.insert(k, V::default());
        }
        self.slots[k].as_mut().expect("just inserted")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes every value out, leaving the map empty.
    #[cfg(windows)]
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = V> + '_ {
        self.len = 0;
        self.slots.drain(..).flatten()
    }
}
