//! Typed arenas: `Arena<T>` stores items, `Id<T>` names one; side tables are `SecondaryMap`s.
//!
//! Rules: ids are dense indices, only meaningful for the arena that made them; an id is `Copy`
//! and 4 bytes. An arena of items that borrow (a lifetime) names them by a tag type instead,
//! `Arena<T, Tag>` handing out `Id<Tag>`, so the ids stay free of the lifetime. Analysis results never live inside arena items: they go in a `SecondaryMap`
//! keyed by the same ids, so passes can drop or recompute them freely.

use std::fmt;
use std::marker::PhantomData;

pub struct Id<T> {
    index: u32,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Id<T> {
    pub fn new(index: usize) -> Id<T> {
        Id { index: index as u32, _marker: PhantomData }
    }

    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Id<T> {}
impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}
impl<T> Eq for Id<T> {}
impl<T> PartialOrd for Id<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Id<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.index.cmp(&other.index)
    }
}
impl<T> std::hash::Hash for Id<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state)
    }
}
impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.index)
    }
}

#[derive(Clone, PartialEq)]
pub struct Arena<T, K = T> {
    items: Vec<T>,
    _key: PhantomData<fn() -> K>,
}

impl<T, K> Default for Arena<T, K> {
    fn default() -> Self {
        Arena { items: Vec::new(), _key: PhantomData }
    }
}

impl<T: fmt::Debug, K> fmt::Debug for Arena<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()
    }
}

impl<T, K> Arena<T, K> {
    pub fn new() -> Arena<T, K> {
        Arena::default()
    }

    pub fn push(&mut self, item: T) -> Id<K> {
        self.items.push(item);
        Id::new(self.items.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, id: Id<K>) -> Option<&T> {
        self.items.get(id.index())
    }

    /// The id the next [`Arena::push`] returns.
    pub fn next_id(&self) -> Id<K> {
        Id::new(self.items.len())
    }

    pub fn ids(&self) -> impl DoubleEndedIterator<Item = Id<K>> + use<T, K> {
        (0..self.items.len()).map(Id::new)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (Id<K>, &T)> {
        self.items.iter().enumerate().map(|(i, t)| (Id::new(i), t))
    }

    /// The items in id order.
    pub fn values(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }
}

impl<T, K> std::ops::Index<Id<K>> for Arena<T, K> {
    type Output = T;
    fn index(&self, id: Id<K>) -> &T {
        &self.items[id.index()]
    }
}

impl<T, K> std::ops::IndexMut<Id<K>> for Arena<T, K> {
    fn index_mut(&mut self, id: Id<K>) -> &mut T {
        &mut self.items[id.index()]
    }
}

/// A side table: a value for some ids of an arena.
#[derive(Clone, PartialEq)]
pub struct SecondaryMap<K, V> {
    items: Vec<Option<V>>,
    _marker: PhantomData<fn() -> K>,
}

impl<K, V> Default for SecondaryMap<K, V> {
    fn default() -> Self {
        SecondaryMap { items: Vec::new(), _marker: PhantomData }
    }
}

impl<K, V: fmt::Debug> fmt::Debug for SecondaryMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.items.iter().enumerate().filter_map(|(i, v)| v.as_ref().map(|v| (i, v)))).finish()
    }
}

impl<T, V> SecondaryMap<Id<T>, V> {
    pub fn new() -> Self {
        SecondaryMap::default()
    }

    pub fn insert(&mut self, id: Id<T>, value: V) {
        if self.items.len() <= id.index() {
            self.items.resize_with(id.index() + 1, || None);
        }
        self.items[id.index()] = Some(value);
    }

    pub fn get(&self, id: Id<T>) -> Option<&V> {
        self.items.get(id.index()).and_then(Option::as_ref)
    }
}
