//! The pending table's keys. A `Uid` in canonical decimal (every one the connection makes up,
//! and a caller's that reads the same) is kept as its number: made up, written and looked up
//! with no allocation and no string hashing. Any other `Uid` is kept as shared text.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A pending request's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A `Uid` in canonical decimal: digits, no leading zero (but `"0"`), at most `u64::MAX`.
    Num(u64),
    /// Any other `Uid`.
    Text(Arc<str>),
}

impl Key {
    /// The key of `uid`.
    pub(crate) fn of(uid: &str) -> Key {
        match number(uid) {
            Some(n) => Key::Num(n),
            None => Key::Text(Arc::from(uid)),
        }
    }

    /// The `Uid` as text, for error messages.
    pub(crate) fn text(&self) -> String {
        match self {
            Key::Num(n) => n.to_string(),
            Key::Text(text) => text.to_string(),
        }
    }
}

/// The number `uid` names when it is in canonical decimal.
pub(crate) fn number(uid: &str) -> Option<u64> {
    let bytes = uid.as_bytes();
    match bytes {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ => bytes.iter().try_fold(0u64, |n, &b| {
            if !b.is_ascii_digit() {
                return None;
            }
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        }),
    }
}

type Map<K, W> = HashMap<K, W, BuildHasherDefault<UidHasher>>;

/// Pending entries by key: numbers and texts in a map each.
pub(crate) struct Table<W> {
    by_num: Map<u64, W>,
    by_text: Map<Arc<str>, W>,
}

impl<W> Table<W> {
    pub(crate) fn new() -> Self {
        Table {
            by_num: Map::default(),
            by_text: Map::default(),
        }
    }

    /// Adds `waiter` under `key`, or gives it back if the key is taken.
    pub(crate) fn insert(&mut self, key: &Key, waiter: W) -> Result<(), W> {
        use std::collections::hash_map::Entry;
        match key {
            Key::Num(n) => match self.by_num.entry(*n) {
                Entry::Occupied(_) => Err(waiter),
                Entry::Vacant(slot) => {
                    slot.insert(waiter);
                    Ok(())
                }
            },
            Key::Text(text) => match self.by_text.entry(Arc::clone(text)) {
                Entry::Occupied(_) => Err(waiter),
                Entry::Vacant(slot) => {
                    slot.insert(waiter);
                    Ok(())
                }
            },
        }
    }

    /// Removes the entry under `key` if `keep` says it is the one.
    pub(crate) fn remove_if(&mut self, key: &Key, keep: impl FnOnce(&W) -> bool) -> Option<W> {
        match key {
            Key::Num(n) => {
                if self.by_num.get(n).is_some_and(keep) {
                    self.by_num.remove(n)
                } else {
                    None
                }
            }
            Key::Text(text) => {
                if self.by_text.get(&**text).is_some_and(keep) {
                    self.by_text.remove(&**text)
                } else {
                    None
                }
            }
        }
    }

    /// Removes the entry a response with this `Uid` answers.
    pub(crate) fn take(&mut self, uid: &str) -> Option<W> {
        match number(uid) {
            Some(n) => self.by_num.remove(&n),
            None => self.by_text.remove(uid),
        }
    }

    /// Removes every entry `expired` says so of.
    pub(crate) fn take_expired(&mut self, mut expired: impl FnMut(&W) -> bool) -> Vec<W> {
        let mut out: Vec<W> = self
            .by_num
            .extract_if(|_, w| expired(w))
            .map(|(_, w)| w)
            .collect();
        out.extend(self.by_text.extract_if(|_, w| expired(w)).map(|(_, w)| w));
        out
    }

    /// Removes every entry.
    pub(crate) fn take_all(&mut self) -> Vec<W> {
        let mut out: Vec<W> = self.by_num.drain().map(|(_, w)| w).collect();
        out.extend(self.by_text.drain().map(|(_, w)| w));
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.by_num.len() + self.by_text.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_num.is_empty() && self.by_text.is_empty()
    }
}

/// The pending table's hasher: a multiply-rotate over 8-byte words with a final mix, several
/// times cheaper than the default SipHash for short keys. It does not resist chosen
/// collisions, and need not: only the connection's own callers choose the keys (a server can
/// only look keys up), so colliding `Uid`s would slow nobody but the caller choosing them.
#[derive(Default)]
pub(crate) struct UidHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl UidHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for UidHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            self.mix(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn finish(&self) -> u64 {
        // Spread the high bits into the low ones the table indexes by.
        let x = self.0 ^ (self.0 >> 32);
        x.wrapping_mul(MIX) ^ (x >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::{Key, Table, UidHasher, number};
    use crate::decimal::decimal;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};
    use std::sync::Arc;

    #[test]
    fn number_reads_back_every_made_up_uid() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = [0; 20];
            assert_eq!(number(decimal(n, &mut buf)), Some(n));
        }
    }

    #[test]
    fn only_canonical_decimal_is_a_number() {
        for uid in [
            "",
            "00",
            "01",
            "-1",
            "+1",
            "1.0",
            " 1",
            "1 ",
            "1a",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(number(uid), None, "{uid:?}");
        }
        assert_eq!(Key::of("007"), Key::Text(Arc::from("007")));
        assert_eq!(Key::of("7"), Key::Num(7));
    }

    #[test]
    fn a_caller_uid_that_reads_as_a_number_meets_the_made_up_one() {
        let mut table = Table::new();
        assert!(table.insert(&Key::Num(5), "made up").is_ok());
        assert_eq!(table.insert(&Key::of("5"), "caller's"), Err("caller's"));
        assert!(table.insert(&Key::of("05"), "other").is_ok());
        assert_eq!(table.take("5"), Some("made up"));
        assert_eq!(table.take("05"), Some("other"));
        assert!(table.is_empty());
    }

    #[test]
    fn uid_hashes_of_counters_do_not_collide_in_the_low_bits() {
        let hasher = BuildHasherDefault::<UidHasher>::default();
        for hash in [
            &(|n: u64| hasher.hash_one(n)) as &dyn Fn(u64) -> u64,
            &|n: u64| hasher.hash_one(n.to_string().as_str()),
        ] {
            let low: HashSet<u64> = (0..4096u64).map(|n| hash(n) & 0xfff).collect();
            // A uniform hash of 4096 keys into 4096 buckets fills about 63 % of them.
            assert!(
                low.len() > 2400,
                "only {} distinct low-bit patterns",
                low.len()
            );
        }
    }
}
