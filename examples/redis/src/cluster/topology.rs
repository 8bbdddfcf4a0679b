//! `CLUSTER NODES` replies, and the slot map built from several of them: each slot goes to
//! the primary whose claim carries the newest configuration epoch.
//!
//! Why `CLUSTER NODES`: it is the one reply that carries each primary's configuration
//! epoch beside its slots, and the epoch is how the cluster itself settles two claims on a
//! slot (the higher wins, `clusterUpdateSlotsConfigWith`). A node that has not yet heard of
//! a failover still reports the old primary; asking several nodes and keeping, slot by
//! slot, the claim with the highest epoch gives the newest view any of them holds. (`CLUSTER
//! SHARDS` carries no epoch; `CLUSTER SLOTS` neither, and is deprecated since 7.0.)

use std::collections::HashMap;
use std::ops::RangeInclusive;

use crate::cluster::slots::{Node, SLOTS, Shard, SlotMap};

/// One line of a `CLUSTER NODES` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    /// The node's 40-character id.
    pub id: String,
    /// Where clients reach it.
    pub node: Node,
    /// Flagged `master`.
    pub primary: bool,
    /// The id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// Flagged `fail` (the cluster agreed it is down), not merely `fail?`.
    pub failed: bool,
    /// The line of the node that answered.
    pub myself: bool,
    /// Its configuration epoch.
    pub epoch: u64,
    /// The slots it serves (migration marks `[slot->-id]` are left out).
    pub slots: Vec<RangeInclusive<u16>>,
}

/// Why a `CLUSTER NODES` reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of its CLUSTER NODES reply: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
    /// The line, cut to 120 characters.
    pub text: String,
}

/// The nodes `answered` lists in its `CLUSTER NODES` reply. Nodes without a usable address
/// (flagged `noaddr` or `handshake`, or port 0) are left out; a node that does not know its
/// own IP yet (an empty host) is named by the address it was asked at.
///
/// # Errors
/// A line that is not a node line, or a reply with no `myself` line: the node answered
/// something else than Redis Cluster does.
pub fn parse_nodes(reply: &str, answered: &Node) -> Result<Vec<NodeLine>, ParseError> {
    let mut nodes = Vec::new();
    let mut saw_myself = false;
    for (index, text) in reply.lines().enumerate() {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let fail = |reason| ParseError {
            line: index + 1,
            reason,
            text: text.chars().take(120).collect(),
        };
        let fields: Vec<&str> = text.split_ascii_whitespace().collect();
        if fields.len() < 8 {
            return Err(fail("fewer than 8 fields"));
        }
        let id = fields[0];
        if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail("not a node id"));
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        let myself = flags.contains(&"myself");
        saw_myself |= myself;
        let epoch = fields[6]
            .parse::<u64>()
            .map_err(|_| fail("not a config epoch"))?;
        let mut slots = Vec::new();
        for field in &fields[8..] {
            if field.starts_with('[') {
                continue;
            }
            slots.push(parse_range(field).ok_or_else(|| fail("not a slot range"))?);
        }
        // `ip:port@cport[,hostname]`; the host is empty while a node does not know its IP.
        let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| fail("not an address"))?;
        let port: u16 = port.parse().map_err(|_| fail("not a port"))?;
        if flags.contains(&"noaddr") || flags.contains(&"handshake") || port == 0 {
            continue;
        }
        let node = if host.is_empty() && myself {
            answered.clone()
        } else if host.is_empty() {
            continue;
        } else {
            Node::new(host, port)
        };
        nodes.push(NodeLine {
            id: id.to_owned(),
            node,
            primary: flags.contains(&"master"),
            primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            failed: flags.contains(&"fail"),
            myself,
            epoch,
            slots,
        });
    }
    if !saw_myself {
        return Err(ParseError {
            line: 0,
            reason: "no line flagged myself",
            text: reply.chars().take(120).collect(),
        });
    }
    Ok(nodes)
}

/// `5461` or `0-5460`, within 0..16384.
fn parse_range(field: &str) -> Option<RangeInclusive<u16>> {
    let (first, last) = field.split_once('-').unwrap_or((field, field));
    let (first, last): (u16, u16) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last && usize::from(last) < SLOTS).then_some(first..=last)
}

/// The claim that serves a slot so far, while views are merged.
#[derive(Clone, Copy)]
struct Claim {
    epoch: u64,
    /// The claim comes from the primary's own line (`myself`).
    own: bool,
    view: usize,
    line: usize,
}

impl Claim {
    /// Whether this claim beats `other`: a newer epoch, or at the same epoch the primary's
    /// word about itself over another node's word about it.
    fn beats(&self, other: &Claim) -> bool {
        (self.epoch, self.own) > (other.epoch, other.own)
    }
}

/// The slot map from several nodes' views (`CLUSTER NODES` replies): each slot goes to the
/// primary with the newest claim on it; each shard's replicas are those the views list
/// under that primary (`replicas_of`).
pub fn merge(views: &[Vec<NodeLine>], generation: u64) -> SlotMap {
    let mut best: Vec<Option<Claim>> = vec![None; SLOTS];
    for (view, lines) in views.iter().enumerate() {
        for (line, node) in lines.iter().enumerate() {
            if !node.primary {
                continue;
            }
            let claim = Claim {
                epoch: node.epoch,
                own: node.myself,
                view,
                line,
            };
            for range in &node.slots {
                for slot in range.clone() {
                    let held = &mut best[usize::from(slot)];
                    if held.is_none_or(|held| claim.beats(&held)) {
                        *held = Some(claim);
                    }
                }
            }
        }
    }
    // Group the slots by winning claim; claims on one primary from several views are one
    // shard (the first claim seen names its replicas).
    let mut shards: Vec<(Shard, Vec<RangeInclusive<u16>>)> = Vec::new();
    let mut index_of: HashMap<Node, usize> = HashMap::new();
    for (slot, claim) in best.iter().enumerate() {
        let Some(claim) = claim else { continue };
        let slot = slot as u16;
        let line = &views[claim.view][claim.line];
        let index = *index_of.entry(line.node.clone()).or_insert_with(|| {
            let replicas = replicas_of(views, &line.id);
            let shard = Shard {
                primary: line.node.clone(),
                replicas,
                epoch: line.epoch,
            };
            shards.push((shard, Vec::new()));
            shards.len() - 1
        });
        let ranges = &mut shards[index].1;
        match ranges.last_mut() {
            Some(last) if *last.end() + 1 == slot => *last = *last.start()..=slot,
            _ => ranges.push(slot..=slot),
        }
    }
    SlotMap::from_shards(shards, generation)
}

/// The replicas of the primary `id` that any view lists (none flagged `fail`), each once,
/// sorted; a node whose own line says otherwise (a primary, or another's replica) is left
/// out, since a node knows its own role first and the others learn it by gossip.
fn replicas_of(views: &[Vec<NodeLine>], id: &str) -> Vec<Node> {
    let own: HashMap<&str, Option<&str>> = views
        .iter()
        .flatten()
        .filter(|line| line.myself)
        .map(|line| (line.id.as_str(), line.primary_id.as_deref()))
        .collect();
    let mut replicas: Vec<Node> = views
        .iter()
        .flatten()
        .filter(|line| line.primary_id.as_deref() == Some(id) && !line.failed)
        .filter(|line| own.get(line.id.as_str()).is_none_or(|of| *of == Some(id)))
        .map(|line| line.node.clone())
        .collect();
    replicas.sort();
    replicas.dedup();
    replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "e7ac59dba0108369c47b7ab98e42855e802f00fc";
    const B: &str = "da82c133ac9e93169ff3211917d623ec71b921c5";
    const C: &str = "57b405e093c2900d951ef1bf615386c47a4e6bb6";

    /// A two-shard cluster as node A sees it, before C (A's replica) took A's slots.
    fn before_failover() -> String {
        format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191 [8192->-{B}]\n\
             {B} 127.0.0.1:7001@17001 master - 0 1 2 connected 8192-16383\n\
             {C} 127.0.0.1:7002@17002 slave {A} 0 1 1 connected\n"
        )
    }

    /// The same, as C sees it after it was promoted (epoch 3).
    fn after_failover() -> String {
        format!(
            "{A} 127.0.0.1:7000@17000 master,fail - 0 0 1 disconnected\n\
             {B} 127.0.0.1:7001@17001 master - 0 1 2 connected 8192-16383\n\
             {C} 127.0.0.1:7002@17002 myself,master - 0 1 3 connected 0-8191\n"
        )
    }

    #[test]
    fn a_nodes_reply_is_read() {
        let asked = Node::new("127.0.0.1", 7000);
        let nodes = parse_nodes(&before_failover(), &asked).expect("a valid reply");
        assert_eq!(nodes.len(), 3);
        assert!(nodes[0].myself && nodes[0].primary);
        assert_eq!(
            nodes[0].slots,
            vec![0..=8191],
            "the migration mark is skipped"
        );
        assert_eq!(nodes[2].primary_id.as_deref(), Some(A));
        assert_eq!(nodes[1].epoch, 2);
    }

    #[test]
    fn the_newest_epoch_wins_each_slot() {
        let asked = Node::new("127.0.0.1", 7000);
        let old = parse_nodes(&before_failover(), &asked).expect("valid");
        let new = parse_nodes(&after_failover(), &asked).expect("valid");
        for views in [vec![old.clone(), new.clone()], vec![new, old]] {
            let map = merge(&views, 7);
            assert_eq!(map.generation(), 7);
            assert!(map.uncovered().is_empty());
            let shard = map.shard(0).expect("served");
            assert_eq!(shard.primary, Node::new("127.0.0.1", 7002));
            assert_eq!(shard.epoch, 3);
            assert_eq!(
                map.shard(16383).expect("served").primary.addr(),
                "127.0.0.1:7001"
            );
            assert_eq!(map.shards().len(), 2);
        }
    }

    #[test]
    fn replicas_come_with_their_primary() {
        let asked = Node::new("127.0.0.1", 7000);
        let map = merge(
            &[parse_nodes(&before_failover(), &asked).expect("valid")],
            1,
        );
        let shard = map.shard(100).expect("served");
        assert_eq!(shard.replicas, vec![Node::new("127.0.0.1", 7002)]);
        assert!(map.shard(9000).expect("served").replicas.is_empty());
    }

    #[test]
    fn a_replica_counts_when_any_view_knows_it_and_its_own_does_not_deny_it() {
        let asked = Node::new("127.0.0.1", 7000);
        // A has not heard yet that C replicates it: its own view lists C as a primary.
        let a_view = format!(
            "{A} 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-16383\n\
             {C} 127.0.0.1:7002@17002 master - 0 1 0 connected\n"
        );
        let c_view = format!(
            "{A} 127.0.0.1:7000@17000 master - 0 0 1 connected 0-16383\n\
             {C} 127.0.0.1:7002@17002 myself,slave {A} 0 1 1 connected\n"
        );
        let views = [
            parse_nodes(&a_view, &asked).expect("valid"),
            parse_nodes(&c_view, &asked).expect("valid"),
        ];
        let map = merge(&views, 1);
        let shard = map.shard(0).expect("served");
        assert_eq!(shard.replicas, vec![Node::new("127.0.0.1", 7002)]);
        // B's view says C replicates A, but C says it is a primary: not a replica.
        let b_view = format!(
            "{B} 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-16383\n\
             {C} 127.0.0.1:7002@17002 slave {B} 0 1 1 connected\n"
        );
        let c_alone = format!("{C} 127.0.0.1:7002@17002 myself,master - 0 1 0 connected\n");
        let views = [
            parse_nodes(&b_view, &asked).expect("valid"),
            parse_nodes(&c_alone, &asked).expect("valid"),
        ];
        assert!(
            merge(&views, 1)
                .shard(0)
                .expect("served")
                .replicas
                .is_empty()
        );
    }

    #[test]
    fn garbage_is_refused_with_its_line() {
        let asked = Node::new("127.0.0.1", 7000);
        let error = parse_nodes("hello world\n", &asked).expect_err("not a reply");
        assert_eq!(error.line, 1);
        let no_myself = format!("{B} 127.0.0.1:7001@17001 master - 0 1 2 connected 0-1\n");
        assert!(parse_nodes(&no_myself, &asked).is_err());
        let bad_slot =
            format!("{B} 127.0.0.1:7001@17001 myself,master - 0 1 2 connected 0-99999\n");
        assert_eq!(
            parse_nodes(&bad_slot, &asked).expect_err("slot").reason,
            "not a slot range"
        );
    }

    #[test]
    fn a_node_without_its_ip_is_named_by_the_address_asked() {
        let asked = Node::new("127.0.0.5", 7000);
        let reply = format!("{A} :7000@17000 myself,master - 0 0 0 connected 0-16383\n");
        let nodes = parse_nodes(&reply, &asked).expect("valid");
        assert_eq!(nodes[0].node, asked);
    }
}
