//! What the backends see of the LB nodes' forwarding: nftables sets in each
//! backend's namespace, matched on the forwarding node's data MAC, record
//! the SYNs each node forwarded (client port, sequence number, when) and the
//! last time each forwarded another segment of a client port. From them:
//! which node placed a connection on which backend, which nodes carried it
//! later, and whether every connection's segments stayed on the backend that
//! answered it ([`stickiness`]).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

use crate::load::{unix_now, Record};
use crate::topology::Topology;

/// What the backends record of the segments the LB nodes forward to them
/// ([`record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// Each node's SYNs ([`syns_seen`]).
    Syns,
    /// Each node's SYNs, and the last time it forwarded another segment of
    /// each client port ([`segments_seen`], [`placements`]).
    SynsAndSegments,
}

/// Makes every backend remember, per LB node, the SYNs that node forwarded:
/// client port and initial sequence number (one element per connection, its
/// retransmitted SYNs included), added with a one-hour timeout so that the
/// time left tells when (an nftables set per node, matched on the frame's
/// source MAC: the node's data interface). With [`Recording::SynsAndSegments`], also the last
/// time each node forwarded a segment other than a SYN of each client port
/// (the timeout refreshed on every one: [`segments_seen`]). The router's
/// multipath hash cannot be recomputed from outside: for locally originated
/// TCP the kernel hashes the socket's random `txhash`, which survives the
/// veth hop (as a NIC's RSS hash would), not the 5-tuple `ip route get`
/// hashes.
pub fn record(topo: &Topology, what: Recording) -> Result<()> {
    let segments = what == Recording::SynsAndSegments;
    for b in &topo.backends {
        let mut rules = String::from("table inet marllb {\n");
        for i in 0..topo.lbs.len() {
            rules += &format!(
                "  set via{i} {{ typeof tcp sport . tcp sequence; size 65535; flags timeout; timeout {SYN_RECORD_S}s; }}\n"
            );
            if segments {
                rules += &format!(
                    "  set seg{i} {{ typeof tcp sport; size 65535; flags timeout; timeout {SYN_RECORD_S}s; }}\n"
                );
            }
        }
        rules += "  chain pre {\n    type filter hook prerouting priority -300; policy accept;\n";
        for (i, lb) in topo.lbs.iter().enumerate() {
            rules += &format!(
                "    tcp dport 80 tcp flags & (syn | ack) == syn ether saddr {} add @via{i} {{ tcp sport . tcp sequence }}\n",
                lb.data_mac
            );
            if segments {
                rules += &format!(
                    "    tcp dport 80 tcp flags & syn == 0 ether saddr {} update @seg{i} {{ tcp sport timeout {SYN_RECORD_S}s }}\n",
                    lb.data_mac
                );
            }
        }
        rules += "  }\n}\n";
        let f = topo.dir.join(format!("{}-nft.conf", b.spec.id));
        std::fs::write(&f, rules)?;
        crate::netns::run(crate::netns::in_ns(&b.ns, "nft").arg("-f").arg(&f))
            .context("nft (Debian package nftables) records which LB node carried each SYN")?;
    }
    Ok(())
}

/// Client port → the backends that received a segment of it.
pub type Placements = BTreeMap<u16, BTreeSet<String>>;

/// What the backends recorded since [`record`] (with
/// [`Recording::SynsAndSegments`]): for every client port, the backends that
/// got a segment of it through any LB node.
pub fn placements(topo: &Topology) -> Result<Placements> {
    let mut out = Placements::new();
    for b in &topo.backends {
        for i in 0..topo.lbs.len() {
            for set in [format!("via{i}"), format!("seg{i}")] {
                for (port, _) in nft_set_times(&b.ns, &set)? {
                    let port: u16 = port.parse().with_context(|| format!("nft port {port:?}"))?;
                    out.entry(port).or_default().insert(b.spec.id.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Whether each connection's segments all went to one backend, the one that
/// answered it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stickiness {
    /// Answered connections that were the only one of the run on their
    /// client port: every segment of the port reached exactly the backend
    /// that answered.
    pub checked: usize,
    /// Answered connections on a client port that served several (the
    /// client reuses ports; their segments cannot be told apart): every
    /// backend that got a segment of the port answered one of them.
    pub reused_port: usize,
    /// Ports whose segments reached a backend that answered none of their
    /// connections, or several backends for one connection: (client port,
    /// backends that answered, backends that got segments).
    pub split: Vec<(u16, Vec<String>, Vec<String>)>,
    /// Ports of answered connections that no backend recorded.
    pub unplaced: Vec<u16>,
}

impl Stickiness {
    /// Every connection stayed on the backend that answered it.
    pub fn holds(&self) -> bool {
        self.split.is_empty() && self.unplaced.is_empty()
    }
}

/// Checks `records` (one run) against what the backends recorded.
pub fn stickiness(records: &[Record], placed: &Placements) -> Stickiness {
    // Client port -> (connections, answered ones, the backends that answered).
    let mut ports: BTreeMap<u16, (usize, usize, BTreeSet<String>)> = BTreeMap::new();
    for r in records {
        let e = ports.entry(r.sport).or_default();
        e.0 += 1;
        if let Some(b) = r.backend.as_ref().filter(|_| !r.failed()) {
            e.1 += 1;
            e.2.insert(b.clone());
        }
    }
    let mut out = Stickiness::default();
    for (port, (uses, ok, answered)) in ports {
        if answered.is_empty() {
            continue;
        }
        if uses == 1 {
            out.checked += ok;
        } else {
            out.reused_port += ok;
        }
        match placed.get(&port) {
            None => out.unplaced.push(port),
            Some(got) if !got.is_subset(&answered) || (uses == 1 && got.len() > 1) => {
                out.split.push((
                    port,
                    answered.iter().cloned().collect(),
                    got.iter().cloned().collect(),
                ));
            }
            Some(_) => {}
        }
    }
    out
}

/// The elements of a backend's nftables set `name` with the UNIX time each
/// was added or last refreshed: (element's first field, time).
fn nft_set_times(ns: &str, name: &str) -> Result<Vec<(String, f64)>> {
    let listed_at = unix_now();
    // The text listing: JSON rounds the time left to seconds.
    let text = crate::netns::run(
        crate::netns::in_ns(ns, "nft").args(["list", "set", "inet", "marllb", name]),
    )?;
    let Some(elems) = text
        .split_once("elements = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(e, _)| e)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in elems.split(',') {
        // `36170 . 3565843007 expires 59m50s123ms`, or with a timeout of its
        // own `36170 timeout 1h expires 59m50s123ms`
        let w: Vec<&str> = e.split_whitespace().collect();
        let (Some(first), Some(left)) = (
            w.first(),
            w.iter()
                .position(|x| *x == "expires")
                .and_then(|k| w.get(k + 1))
                .and_then(|d| nft_duration(d)),
        ) else {
            bail!("unexpected nft set element {e:?}");
        };
        out.push((first.to_string(), listed_at - (SYN_RECORD_S as f64 - left)));
    }
    Ok(out)
}

/// Client port → (LB node, the last time it forwarded a non-SYN segment of
/// the port to any backend), from [`record`]'s `seg` sets.
pub fn segments_seen(topo: &Topology, nodes: usize) -> Result<BTreeMap<u16, Vec<(usize, f64)>>> {
    let mut out: BTreeMap<u16, Vec<(usize, f64)>> = Default::default();
    for b in &topo.backends {
        for i in 0..nodes {
            for (port, at) in nft_set_times(&b.ns, &format!("seg{i}"))? {
                let port: u16 = port.parse().with_context(|| format!("nft port {port:?}"))?;
                let v = out.entry(port).or_default();
                match v.iter_mut().find(|(n, _)| *n == i) {
                    Some(e) => e.1 = e.1.max(at),
                    None => v.push((i, at)),
                }
            }
        }
    }
    Ok(out)
}

/// Lifetime of a recorded SYN (longer than any scenario).
const SYN_RECORD_S: u64 = 3600;

/// One connection's SYN as a backend saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SynSeen {
    /// LB node that forwarded it.
    pub node: usize,
    /// Backend it went to.
    pub backend: String,
    /// When (UNIX seconds, to about 10 ms: the listing's own duration).
    pub at_unix: f64,
}

/// `59m58s752ms` → seconds.
fn nft_duration(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += match c {
            'd' => n * 86_400.0,
            'h' => n * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                n / 1000.0
            }
            'm' => n * 60.0,
            's' => n,
            _ => return None,
        };
    }
    num.is_empty().then_some(total)
}

/// Client port → every SYN the backends recorded on it (of every connection
/// that used the port in the run: the client reuses ports), oldest first.
pub fn syns_seen(topo: &Topology, nodes: usize) -> Result<BTreeMap<u16, Vec<SynSeen>>> {
    let mut out: BTreeMap<u16, Vec<SynSeen>> = Default::default();
    for b in &topo.backends {
        for i in 0..nodes {
            for (port, at_unix) in nft_set_times(&b.ns, &format!("via{i}"))? {
                let port: u16 = port.parse().with_context(|| format!("nft port {port:?}"))?;
                out.entry(port).or_default().push(SynSeen {
                    node: i,
                    backend: b.spec.id.clone(),
                    at_unix,
                });
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by(|x, y| x.at_unix.total_cmp(&y.at_unix));
    }
    Ok(out)
}

/// Client port → (LB node, last non-SYN segment's UNIX time).
pub type SegmentTimes = BTreeMap<u16, Vec<(usize, f64)>>;

#[cfg(test)]
mod tests {
    use super::nft_duration;

    #[test]
    fn nft_times_left_parse() {
        assert_eq!(nft_duration("59m58s752ms"), Some(3598.752));
        assert_eq!(nft_duration("1h"), Some(3600.0));
        assert_eq!(nft_duration("2s"), Some(2.0));
        assert_eq!(nft_duration("59m"), Some(3540.0));
        assert_eq!(nft_duration("12"), None);
        assert_eq!(nft_duration("3x"), None);
    }

    #[test]
    fn stickiness_flags_split_and_unplaced_connections() {
        use super::{stickiness, Placements};
        use crate::load::Record;
        let rec = |sport: u16, b: &str, outcome: &str| -> Record {
            serde_json::from_str(&format!(
                r#"{{"at":1,"latency_ms":5,"outcome":"{outcome}","backend":"{b}","sport":{sport}}}"#
            ))
            .expect("record")
        };
        let placed: Placements = [
            (1000, vec!["be0"]),
            (1001, vec!["be0", "be1"]),
            (1002, vec!["be1"]),
            (1004, vec!["be0", "be1"]),
            (1005, vec!["be0", "be2"]),
        ]
        .into_iter()
        .map(|(p, v)| (p, v.into_iter().map(String::from).collect()))
        .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let records = [
            rec(1000, "be0", "ok"),
            // Segments at two backends.
            rec(1001, "be0", "ok"),
            // Answered by be0, recorded only at be1.
            rec(1002, "be0", "ok"),
            // Not recorded at all.
            rec(1003, "be2", "ok"),
            // Two connections on one port, one on each backend it reached.
            rec(1004, "be1", "ok"),
            rec(1004, "be0", "ok"),
            // Two on one port, both answered by be0, and be2 got segments.
            rec(1005, "be0", "ok"),
            rec(1005, "be0", "ok"),
        ];
        let st = stickiness(&records, &placed);
        assert_eq!(st.checked, 4);
        assert_eq!(st.reused_port, 4);
        assert_eq!(
            st.split,
            [
                (1001, s(&["be0"]), s(&["be0", "be1"])),
                (1002, s(&["be0"]), s(&["be1"])),
                (1005, s(&["be0"]), s(&["be0", "be2"])),
            ]
        );
        assert_eq!(st.unplaced, [1003]);
        assert!(!st.holds());
        let st = stickiness(&records[..1], &placed);
        assert!(st.holds() && st.checked == 1, "{st:?}");
        let st = stickiness(&records[4..6], &placed);
        assert!(st.holds() && st.reused_port == 2, "{st:?}");
    }
}
