//! The I/O of flow-state sync, shared by both hosts: one UDP socket on a
//! kernel address of the LB node, datagrams to and from the configured peers
//! (what a record is and how it is applied: `marllb_core::sync`).
//!
//! A host collects its workers' records and calls [`SyncLink::send`], then
//! [`SyncLink::receive`] and hands the records to its workers; when a peer is
//! seen with a new instance (it started again) `receive` says so, and the host
//! has its workers dump their established connections
//! (`Worker::dump_sync`). Bounds: at most [`MAX_DATAGRAMS`] datagrams are read
//! per call; a datagram from an address that is not a configured peer, or
//! that the core refuses, is dropped and counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use marllb_core::sync::{decode, encode, SyncRecord, MAX_RECORDS};

/// Datagrams read per call.
pub const MAX_DATAGRAMS: usize = 256;
/// A hello (an empty datagram carrying this node's instance) this often.
pub const HELLO_EVERY: Duration = Duration::from_secs(1);
/// Most sync peers.
pub const MAX_PEERS: usize = 16;

/// What the link did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SyncCounters {
    /// Datagrams sent (one per peer per batch).
    pub datagrams_sent: u64,
    /// Records sent (counted once, whatever the number of peers).
    pub records_sent: u64,
    /// Datagrams whose send failed.
    pub send_errors: u64,
    /// Datagrams received from peers and decoded.
    pub datagrams_received: u64,
    /// Records received.
    pub records_received: u64,
    /// Datagrams refused: not from a peer, or not a valid sync datagram.
    pub datagrams_refused: u64,
    /// Records a host dropped because a worker's inbox was full.
    pub inbox_dropped: u64,
    /// Dumps of this node's connections, asked for by a peer that (re)started.
    pub dumps: u64,
}

/// Why the sync settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncConfigError {
    /// No peer, or too many.
    #[error("1 to {MAX_PEERS} peers, {0} given")]
    Peers(usize),
    /// A peer is the listen address, or listed twice.
    #[error("peer {0} is this node's listen address or listed twice")]
    Duplicate(SocketAddr),
}

/// Checks a listen address and its peers.
pub fn check_peers(listen: SocketAddr, peers: &[SocketAddr]) -> Result<(), SyncConfigError> {
    if peers.is_empty() || peers.len() > MAX_PEERS {
        return Err(SyncConfigError::Peers(peers.len()));
    }
    for (i, p) in peers.iter().enumerate() {
        if *p == listen || peers[..i].contains(p) {
            return Err(SyncConfigError::Duplicate(*p));
        }
    }
    Ok(())
}

/// The socket and its peers.
#[derive(Debug)]
pub struct SyncLink {
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    seed: u64,
    instance: u32,
    seen: HashMap<IpAddr, u32>,
    last_hello: Option<Instant>,
    /// Counters.
    pub counters: SyncCounters,
}

impl SyncLink {
    /// Binds `listen` (non-blocking) for `peers`; `seed` is the service's
    /// hash seed (peers with another refuse each other's datagrams).
    pub fn bind(listen: SocketAddr, peers: &[SocketAddr], seed: u64) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(listen)?;
        socket.set_nonblocking(true)?;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let instance = (t ^ (u64::from(std::process::id()) << 20)) as u32 | 1;
        Ok(Self {
            socket,
            peers: peers.to_vec(),
            seed,
            instance,
            seen: HashMap::new(),
            last_hello: None,
            counters: SyncCounters::default(),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `records` to every peer, and a hello when one is due.
    pub fn send(&mut self, records: &[SyncRecord]) {
        let mut buf = [0u8; 1500];
        if self.last_hello.is_none_or(|t| t.elapsed() >= HELLO_EVERY) {
            self.last_hello = Some(Instant::now());
            let (len, _) = encode(&[], self.seed, self.instance, &mut buf);
            for p in &self.peers {
                if self.socket.send_to(&buf[..len], p).is_err() {
                    self.counters.send_errors += 1;
                }
            }
        }
        let mut rest = records;
        while !rest.is_empty() {
            let (len, n) = encode(rest, self.seed, self.instance, &mut buf);
            if n == 0 {
                break;
            }
            rest = &rest[n..];
            self.counters.records_sent += n as u64;
            for p in &self.peers {
                match self.socket.send_to(&buf[..len], p) {
                    Ok(_) => self.counters.datagrams_sent += 1,
                    Err(_) => self.counters.send_errors += 1,
                }
            }
        }
    }

    /// Reads what the peers sent (bounded) into `into`; `true` when a peer
    /// was seen with a new instance (its first datagram, or it started
    /// again): the host should dump its connections to the peers.
    pub fn receive(&mut self, into: &mut Vec<SyncRecord>) -> bool {
        let mut buf = [0u8; 1500];
        let mut recs = [SyncRecord::default(); MAX_RECORDS];
        let mut restarted = false;
        for _ in 0..MAX_DATAGRAMS {
            let (len, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(_) => break,
            };
            if !self.peers.iter().any(|p| p.ip() == from.ip()) {
                self.counters.datagrams_refused += 1;
                continue;
            }
            match decode(&buf[..len], self.seed, &mut recs) {
                Ok(d) => {
                    self.counters.datagrams_received += 1;
                    self.counters.records_received += d.records as u64;
                    into.extend_from_slice(&recs[..d.records]);
                    if self.seen.insert(from.ip(), d.instance) != Some(d.instance) {
                        self.counters.dumps += 1;
                        restarted = true;
                    }
                }
                Err(_) => self.counters.datagrams_refused += 1,
            }
        }
        restarted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_links_exchange_records_and_see_a_restart() {
        let a_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut b = SyncLink::bind(a_addr, &["127.0.0.1:9".parse().unwrap()], 5).unwrap();
        let b_at = b.local_addr().unwrap();
        let mut a = SyncLink::bind(a_addr, &[b_at], 5).unwrap();
        let a_at = a.local_addr().unwrap();
        b.peers = vec![a_at];
        let r = SyncRecord {
            proto: 6,
            sport: 4,
            dport: 80,
            ..SyncRecord::default()
        };
        a.send(&[r; 30]);
        std::thread::sleep(Duration::from_millis(50));
        let mut got = Vec::new();
        assert!(
            b.receive(&mut got),
            "the first datagram of a peer is a new instance"
        );
        assert_eq!(got.len(), 30);
        assert_eq!(a.counters.datagrams_sent, 2);
        // Same instance again: no dump.
        a.send(&[r]);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!b.receive(&mut got));
        // A restarted peer (new instance) asks for one.
        let mut a2 = SyncLink::bind(a_addr, &[b_at], 5).unwrap();
        a2.instance ^= 0x55;
        a2.send(&[]);
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.receive(&mut got));
        // From a stranger, or with another seed: refused.
        let mut other = SyncLink::bind(a_addr, &[b_at], 6).unwrap();
        other.send(&[r]);
        std::thread::sleep(Duration::from_millis(50));
        b.receive(&mut got);
        assert!(b.counters.datagrams_refused >= 1);
        assert!(check_peers(a_at, &[]).is_err());
        assert!(check_peers(a_at, &[a_at]).is_err());
        assert!(check_peers(a_at, &[b_at, b_at]).is_err());
        assert!(check_peers(a_at, &[b_at]).is_ok());
    }
}
