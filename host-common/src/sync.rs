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
//!
//! Rate: a node sends at most `max_records_per_s` records a second (a token
//! bucket with a tenth of a second's burst); what is over waits in a backlog
//! of at most one second's records, and beyond that is dropped and counted
//! (those connections would not survive a failover; nothing else is
//! affected). A dump is paced by the backlog ([`SyncLink::backlogged`]). The
//! receiver holds every peer to the same rate: records over it are dropped
//! and counted, so a flood of new flows on one node (or a peer that ignores
//! its limit) costs another node at most that rate of table inserts and
//! link bandwidth. Records are made only at handshake completion, so a SYN
//! flood makes none.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use marllb_core::sync::{decode, encode, SyncRecord, MAX_RECORDS};

/// Datagrams read per call.
pub const MAX_DATAGRAMS: usize = 256;
/// A hello (an empty datagram carrying this node's instance) this often.
pub const HELLO_EVERY: Duration = Duration::from_secs(1);
/// Most sync peers.
pub const MAX_PEERS: usize = 16;
/// Records a second a node sends, and accepts from each peer, unless
/// configured: about 14 MB/s on the wire (57.8 bytes a record with the
/// headers, `cargo xtask bench sync`), a quarter of a million connections
/// established a second.
pub const DEFAULT_MAX_RECORDS_PER_S: u32 = 250_000;
/// Records a worker's inbox holds; beyond, records are dropped and counted,
/// so a flooding peer cannot grow memory without bound.
pub const MAX_INBOX: usize = 16_384;

/// A token bucket: `rate` tokens a second, at most `rate / 10` (and at least
/// one datagram's worth) held.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        let cap = (rate / 10.0).max(MAX_RECORDS as f64);
        Self {
            rate,
            cap,
            tokens: cap,
            at: now,
        }
    }

    /// Up to `want` tokens taken at `now`.
    fn take(&mut self, want: usize, now: Instant) -> usize {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.cap);
        let n = (self.tokens.floor() as usize).min(want);
        self.tokens -= n as f64;
        n
    }
}

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
    /// Records this node made that were dropped because its backlog (one
    /// second at the rate) was full.
    pub records_over_rate_out: u64,
    /// Records a peer sent over the rate, dropped.
    pub records_over_rate_in: u64,
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
    max_per_s: u32,
    out_rate: Bucket,
    backlog: VecDeque<SyncRecord>,
    in_rate: HashMap<IpAddr, Bucket>,
    /// Counters.
    pub counters: SyncCounters,
}

impl SyncLink {
    /// Binds `listen` (non-blocking) for `peers` at
    /// [`DEFAULT_MAX_RECORDS_PER_S`]; `seed` is the service's hash seed
    /// (peers with another refuse each other's datagrams).
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
            max_per_s: DEFAULT_MAX_RECORDS_PER_S,
            out_rate: Bucket::new(DEFAULT_MAX_RECORDS_PER_S, Instant::now()),
            backlog: VecDeque::new(),
            in_rate: HashMap::new(),
            counters: SyncCounters::default(),
        })
    }

    /// The rate sent and accepted from each peer (records a second, at
    /// least 1).
    pub fn with_rate(mut self, max_records_per_s: u32) -> Self {
        self.max_per_s = max_records_per_s.max(1);
        self.out_rate = Bucket::new(self.max_per_s, Instant::now());
        self.in_rate.clear();
        self
    }

    /// More than half a second of records waits to be sent: a dump should
    /// pause.
    pub fn backlogged(&self) -> bool {
        self.backlog.len() > self.max_per_s as usize / 2
    }

    /// Hands `got` to every inbox (a moved connection may land on any
    /// worker), each holding at most [`MAX_INBOX`]; the overflow is counted.
    pub fn deliver<'a>(
        &mut self,
        got: &[SyncRecord],
        inboxes: impl IntoIterator<Item = &'a mut Vec<SyncRecord>>,
    ) {
        for inbox in inboxes {
            let take = got.len().min(MAX_INBOX.saturating_sub(inbox.len()));
            inbox.extend_from_slice(&got[..take]);
            self.counters.inbox_dropped += (got.len() - take) as u64;
        }
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
        let cap = self.max_per_s as usize;
        let room = cap.saturating_sub(self.backlog.len());
        let queued = records.len().min(room);
        self.backlog.extend(&records[..queued]);
        self.counters.records_over_rate_out += (records.len() - queued) as u64;
        let n = self.out_rate.take(self.backlog.len(), Instant::now());
        let batch: Vec<SyncRecord> = self.backlog.drain(..n).collect();
        let mut rest = &batch[..];
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
                    let rate = self.max_per_s;
                    let bucket = self
                        .in_rate
                        .entry(from.ip())
                        .or_insert_with(|| Bucket::new(rate, Instant::now()));
                    let ok = bucket.take(d.records, Instant::now());
                    self.counters.records_over_rate_in += (d.records - ok) as u64;
                    into.extend_from_slice(&recs[..ok]);
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

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_a_tenth_of_a_second() {
        let t = Instant::now();
        let mut b = Bucket::new(10_000, t);
        assert_eq!(b.take(5_000, t), 1_000, "a tenth of a second's burst");
        assert_eq!(b.take(5_000, t), 0);
        assert_eq!(b.take(5_000, t + Duration::from_millis(50)), 500);
        // Idle for long: still at most the burst.
        assert_eq!(b.take(5_000, t + Duration::from_secs(60)), 1_000);
        // A tiny rate still passes a datagram's worth at once.
        let mut b = Bucket::new(1, t);
        assert_eq!(b.take(100, t), MAX_RECORDS);
    }

    #[test]
    fn a_flood_is_held_to_the_rate_on_both_sides() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut b = SyncLink::bind(any, &["127.0.0.1:9".parse().unwrap()], 5)
            .unwrap()
            .with_rate(1_000);
        let b_at = b.local_addr().unwrap();
        // The sender: 1 000 a second, a backlog of one second's records.
        let mut a = SyncLink::bind(any, &[b_at], 5).unwrap().with_rate(1_000);
        let a_at = a.local_addr().unwrap();
        b.peers = vec![a_at];
        let r = SyncRecord {
            proto: 6,
            dport: 80,
            ..SyncRecord::default()
        };
        a.send(&vec![r; 5_000]);
        // One second's records queued (4 000 dropped), 100 of them sent at
        // once (the burst), 900 wait.
        assert_eq!(a.counters.records_sent, 100);
        assert_eq!(a.counters.records_over_rate_out, 4_000);
        assert!(a.backlogged());
        std::thread::sleep(Duration::from_millis(50));
        let mut got = Vec::new();
        b.receive(&mut got);
        assert_eq!(got.len(), 100);
        // A peer that ignores the rate (its own limit far higher): the
        // receiver keeps to 1 000 a second, with a burst of 100.
        let mut c = SyncLink::bind(any, &[b_at], 5)
            .unwrap()
            .with_rate(1_000_000);
        b.peers.push(c.local_addr().unwrap());
        // (60 datagrams: within the socket's receive buffer.)
        c.send(&vec![r; 1_500]);
        std::thread::sleep(Duration::from_millis(50));
        got.clear();
        let before = b.counters.records_received;
        b.receive(&mut got);
        let arrived = b.counters.records_received - before;
        assert!(arrived >= 1_000, "{arrived}");
        // The bucket is the peer address's: a's 100 came out of it too.
        assert!(got.len() <= 160, "{}", got.len());
        assert_eq!(b.counters.records_over_rate_in, arrived - got.len() as u64);
        // Delivery: every inbox gets every record, up to its bound.
        let mut w0 = vec![r; MAX_INBOX - 10];
        let mut w1 = Vec::new();
        b.deliver(&got, [&mut w0, &mut w1]);
        assert_eq!(w0.len(), MAX_INBOX);
        assert_eq!(w1.len(), got.len());
        assert_eq!(b.counters.inbox_dropped, (got.len() - 10) as u64);
    }
}
