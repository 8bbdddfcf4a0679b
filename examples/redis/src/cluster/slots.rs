//! Hash slots: the slot of a key (CRC16 of the key or its `{hashtag}`), a cluster [`Node`],
//! and the [`SlotMap`] that says which shard serves each of the 16 384 slots.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

/// How many hash slots a Redis Cluster has.
pub const SLOTS: usize = 16384;

/// A cluster node, named by the address clients reach it at (`host:port`), which is also
/// the key of its pool.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// `host:port`.
    addr: Arc<str>,
    /// The port, also at the end of `addr`.
    port: u16,
}

impl Node {
    /// The node at `host:port`.
    pub fn new(host: &str, port: u16) -> Node {
        Node {
            addr: format!("{host}:{port}").into(),
            port,
        }
    }

    /// The node of a `redis://host:port` URL (or a bare `host:port`); `None` when it has no
    /// port or its port is not a number.
    pub fn from_url(url: &str) -> Option<Node> {
        let rest = url
            .strip_prefix("redis://")
            .unwrap_or(url)
            .trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        (!host.is_empty() && port != 0).then(|| Node::new(host, port))
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The host: `addr` up to its last `:` (an IPv6 address keeps its own colons).
    pub fn host(&self) -> &str {
        self.addr
            .rsplit_once(':')
            .map_or(&self.addr, |(host, _)| host)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://host:port`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({})", self.addr)
    }
}

/// CRC16 as Redis Cluster computes it: the XMODEM variant (polynomial 0x1021, initial value
/// 0, no reflection).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash slot of `key`: CRC16 of the key modulo 16 384, or of its hashtag when it has one
/// (the bytes between the first `{` and the next `}`, if any lie between), so that keys
/// sharing a hashtag share a slot.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// A primary and its replicas: the nodes that serve some slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The node that takes writes for the shard's slots.
    pub primary: Node,
    /// Its replicas known to be up (none flagged `fail`), which serve reads after `READONLY`.
    pub replicas: Vec<Node>,
    /// The configuration epoch of the primary's claim on its slots.
    pub epoch: u64,
}

/// Marks a slot no shard serves.
const NONE: u16 = u16::MAX;

/// Which shard serves each slot. Immutable once built: a refresh builds a new one and
/// swaps it in whole, so a caller routes with one consistent map.
#[derive(Debug, Clone)]
pub struct SlotMap {
    /// Index into `shards` of each slot, or [`NONE`].
    owner: Vec<u16>,
    shards: Vec<Shard>,
    /// Counts the maps a refresh installed; 0 for the empty map before the first one.
    generation: u64,
}

impl SlotMap {
    /// The map before any refresh: no slot is served.
    pub fn empty() -> SlotMap {
        SlotMap {
            owner: vec![NONE; SLOTS],
            shards: Vec::new(),
            generation: 0,
        }
    }

    /// A map from shards and the slot ranges each serves; a slot claimed twice goes to the
    /// later shard.
    pub fn from_shards(shards: Vec<(Shard, Vec<RangeInclusive<u16>>)>, generation: u64) -> Self {
        let mut map = SlotMap {
            generation,
            ..SlotMap::empty()
        };
        for (shard, ranges) in shards {
            let index = map.shards.len() as u16;
            for range in ranges {
                for slot in range {
                    if let Some(owner) = map.owner.get_mut(usize::from(slot)) {
                        *owner = index;
                    }
                }
            }
            map.shards.push(shard);
        }
        map
    }

    /// The shard serving `slot`, if any.
    pub fn shard(&self, slot: u16) -> Option<&Shard> {
        let index = *self.owner.get(usize::from(slot))?;
        self.shards.get(usize::from(index))
    }

    /// Every shard, each once.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Every node the map names, primaries first.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        let primaries = self.shards.iter().map(|shard| &shard.primary);
        primaries.chain(self.shards.iter().flat_map(|shard| &shard.replicas))
    }

    /// The map's generation: 0 before the first refresh, one more for each map installed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The slot ranges no shard serves, in order.
    pub fn uncovered(&self) -> Vec<RangeInclusive<u16>> {
        let mut ranges = Vec::new();
        let mut start = None;
        for (slot, &owner) in self.owner.iter().enumerate() {
            let slot = slot as u16;
            match (owner == NONE, start) {
                (true, None) => start = Some(slot),
                (false, Some(first)) => {
                    ranges.push(first..=slot - 1);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(first) = start {
            ranges.push(first..=(SLOTS - 1) as u16);
        }
        ranges
    }
}

/// Slot ranges as Redis writes them: `0-5460 5461 5462-10922`.
pub fn ranges_text(ranges: &[RangeInclusive<u16>]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|range| {
            if range.start() == range.end() {
                range.start().to_string()
            } else {
                format!("{}-{}", range.start(), range.end())
            }
        })
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // The specification's check value for CRC16/XMODEM, and slots Redis reports
        // (`CLUSTER KEYSLOT`).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b""), 0);
    }

    #[test]
    fn a_hashtag_decides_the_slot() {
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{user1000}.followers"), slot(b"{user1000}.following"));
        // An empty tag, or none closed, hashes the whole key.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot(b"foo{bar"), crc16(b"foo{bar") % 16384);
        // Only the first `{` counts.
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
    }

    #[test]
    fn a_node_comes_from_a_url() {
        assert_eq!(
            Node::from_url("redis://127.0.0.1:7000"),
            Some(Node::new("127.0.0.1", 7000))
        );
        assert_eq!(
            Node::from_url("localhost:7001/"),
            Some(Node::new("localhost", 7001))
        );
        assert_eq!(Node::from_url("redis://localhost"), None);
        assert_eq!(Node::from_url("redis://host:0"), None);
    }

    #[test]
    fn a_node_gives_back_its_host_and_port() {
        let node = Node::new("127.0.0.1", 7000);
        assert_eq!(
            (node.host(), node.port(), node.addr()),
            ("127.0.0.1", 7000, "127.0.0.1:7000")
        );
        let v6 = Node::new("::1", 7001);
        assert_eq!((v6.host(), v6.port()), ("::1", 7001));
        let unknown = Node::new("", 7002);
        assert_eq!((unknown.host(), unknown.port()), ("", 7002));
    }

    #[test]
    fn uncovered_ranges_are_named() {
        let shard = Shard {
            primary: Node::new("a", 1),
            replicas: vec![],
            epoch: 1,
        };
        let map = SlotMap::from_shards(vec![(shard, vec![0..=99, 200..=16000])], 1);
        assert_eq!(map.uncovered(), vec![100..=199, 16001..=16383]);
        assert_eq!(ranges_text(&map.uncovered()), "100-199 16001-16383");
        assert_eq!(map.shard(100), None);
        assert_eq!(map.shard(99).map(|s| s.primary.addr()), Some("a:1"));
        assert!(SlotMap::empty().shard(0).is_none());
        assert_eq!(SlotMap::empty().uncovered(), vec![0..=16383]);
    }
}
