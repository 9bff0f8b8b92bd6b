//! The main lcore's side of flow-state sync (`[sync]`): one UDP socket on a
//! kernel address of the host; the workers' records are sent to every peer,
//! the peers' datagrams are checked and handed to every worker (see
//! `marllb_core::sync` for what a record is and how it is applied).
//!
//! Bounds: at most [`MAX_DATAGRAMS`] datagrams are read per call; a datagram
//! from an address that is not a configured peer, or that the core refuses,
//! is dropped and counted; a worker's inbox holds at most [`MAX_INBOX`]
//! records (beyond, records are dropped and counted), so a peer that floods
//! cannot grow memory without bound.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use marllb_core::sync::{decode, encode, SyncRecord, MAX_RECORDS};
use serde::Serialize;

use crate::config::SyncSettings;
use crate::worker::Shared;

/// Datagrams read per call.
pub const MAX_DATAGRAMS: usize = 256;
/// Records a worker's inbox holds.
pub const MAX_INBOX: usize = 16_384;
/// A hello (an empty datagram carrying this node's instance) this often.
pub const HELLO_EVERY: Duration = Duration::from_secs(1);

/// What the link did.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
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
    /// Records dropped because a worker's inbox was full.
    pub inbox_dropped: u64,
    /// Full dumps of this node's connections, asked for by a peer that
    /// (re)started (a new instance).
    pub dumps: u64,
}

/// The socket and its peers.
#[derive(Debug)]
pub struct SyncLink {
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    seed: u64,
    /// This node's instance (chosen at start).
    instance: u32,
    /// The last instance seen from each peer.
    seen: HashMap<IpAddr, u32>,
    last_hello: Option<Instant>,
    /// Counters.
    pub counters: SyncCounters,
}

impl SyncLink {
    /// Binds `s.listen` (non-blocking).
    pub fn bind(s: &SyncSettings, seed: u64) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(s.listen)?;
        socket.set_nonblocking(true)?;
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let instance = (t ^ (u64::from(std::process::id()) << 20)) as u32 | 1;
        Ok(Self {
            socket,
            peers: s.peers.clone(),
            seed,
            instance,
            seen: HashMap::new(),
            last_hello: None,
            counters: SyncCounters::default(),
        })
    }

    /// One step: sends what the workers made, reads what the peers sent.
    pub fn step(&mut self, shared: &Shared) {
        let mut out: Vec<SyncRecord> = Vec::new();
        for slot in &shared.slots {
            if let Ok(mut v) = slot.sync_out.lock() {
                out.append(&mut v);
            }
        }
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
        let mut rest = &out[..];
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
        let mut recs = [SyncRecord::default(); MAX_RECORDS];
        let mut got: Vec<SyncRecord> = Vec::new();
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
                    got.extend_from_slice(&recs[..d.records]);
                    // A peer that started again has none of our connections.
                    if self.seen.insert(from.ip(), d.instance) != Some(d.instance) {
                        self.counters.dumps += 1;
                        shared.sync_dump.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Err(_) => self.counters.datagrams_refused += 1,
            }
        }
        if got.is_empty() {
            return;
        }
        // Every worker gets every record: which worker a moved connection
        // lands on is the NIC's RSS choice, not known here.
        for slot in &shared.slots {
            if let Ok(mut inbox) = slot.sync_in.lock() {
                let room = MAX_INBOX.saturating_sub(inbox.len());
                let take = got.len().min(room);
                inbox.extend_from_slice(&got[..take]);
                self.counters.inbox_dropped += (got.len() - take) as u64;
            }
        }
    }
}
