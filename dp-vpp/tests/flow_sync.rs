//! Flow-state sync between two plugin instances (two LB nodes, no VPP): a
//! connection established through node A and moved mid-flow to node B goes to
//! the same server there, although B lists the servers in another order (the
//! records name servers by address). `lb rl sync` on both, over 127.0.0.1.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use marllb_core::classify::Verdict;
use marllb_core::pipeline::Packet;
use marllb_vpp::cli::{parse_lb, parse_show};
use marllb_vpp::runtime::Runtime;

fn run(rt: &'static Runtime, line: &str) -> Result<String, String> {
    rt.command(parse_lb(line).map_err(|e| e.0)?)
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server address a TCP packet from client port `sport` goes to.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test helper: its failure is the test's
fn send(rt: &'static Runtime, now: u64, sport: u16, flags: u8) -> Option<[u8; 4]> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 0, 0xfe])
        .ipv4([198, 18, 1, 2], [10, 0, 0, 1], 64)
        .tcp(sport, 80, 1000, 65535);
    let b = if flags & 0x02 != 0 { b.syn() } else { b.ack(1) };
    let mut frame = vec![0u8; 128];
    b.write(&mut frame, &[0u8; 6]).unwrap();
    let len = frame.len() - 128;
    frame.extend_from_slice(&[0u8; 64]);
    rt.with_worker(0, |w, svc| {
        let mut p = Packet::new(&mut frame, 128, len);
        match w.process_one(svc, now, &mut p) {
            Verdict::Forward { backend } => svc.backend(backend).map(|b| {
                let mut a = [0u8; 4];
                a.copy_from_slice(&b.addr[..4]);
                a
            }),
            _ => None,
        }
    })
    .flatten()
}

#[test]
fn a_moved_connection_keeps_its_server() {
    let a: &'static Runtime = Box::leak(Box::new(Runtime::new(1)));
    let b: &'static Runtime = Box::leak(Box::new(Runtime::new(1)));
    let (pa, pb) = (free_port(), free_port());
    for (rt, servers) in [
        (a, "10.1.0.1 10.1.0.2 10.1.0.3"),
        (b, "10.1.0.3 10.1.0.2 10.1.0.1"),
    ] {
        run(
            rt,
            "set-vip 10.0.0.1 protocol tcp port 80 method sed encap ipip",
        )
        .unwrap();
        run(rt, &format!("set-servers {servers}")).unwrap();
        run(rt, "conf ip4-src-address 10.2.0.1").unwrap();
        run(rt, "enable").unwrap();
    }
    assert!(run(
        a,
        &format!("sync listen 127.0.0.1:{pa} peer 127.0.0.1:{pa}")
    )
    .unwrap_err()
    .contains("listen address"));
    run(
        a,
        &format!("sync listen 127.0.0.1:{pa} peer 127.0.0.1:{pb}"),
    )
    .unwrap();
    run(
        b,
        &format!("sync listen 127.0.0.1:{pb} peer 127.0.0.1:{pa}"),
    )
    .unwrap();
    assert!(run(a, "sync listen 127.0.0.1:1 peer 127.0.0.1:2")
        .unwrap_err()
        .contains("already"));
    // Let the sync threads turn the workers' records on.
    std::thread::sleep(Duration::from_millis(50));
    let s = 1_000_000_000u64;
    let ports: Vec<u16> = (2000..2060).collect();
    let mut placed = Vec::new();
    for &p in &ports {
        let at = send(a, s, p, 0x02).expect("SYN forwarded");
        assert_eq!(send(a, s, p, 0x10), Some(at));
        placed.push(at);
    }
    // B without the records would disagree for many of them: a fresh
    // third node shows it.
    let c: &'static Runtime = Box::leak(Box::new(Runtime::new(1)));
    run(
        c,
        "set-vip 10.0.0.1 protocol tcp port 80 method sed encap ipip",
    )
    .unwrap();
    run(c, "set-servers 10.1.0.3 10.1.0.2 10.1.0.1").unwrap();
    run(c, "conf ip4-src-address 10.2.0.1").unwrap();
    run(c, "enable").unwrap();
    let differ = ports
        .iter()
        .zip(&placed)
        .filter(|(&p, &at)| send(c, 2 * s, p, 0x10) != Some(at))
        .count();
    assert!(differ > 10, "{differ}");
    // B got A's records: every moved connection stays on its server.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let show = b.show(parse_show("stats").unwrap());
        if show.contains(&format!("synced-in {}", ports.len())) {
            break;
        }
        assert!(Instant::now() < deadline, "{show}");
        std::thread::sleep(Duration::from_millis(10));
    }
    for (&p, &at) in ports.iter().zip(&placed) {
        assert_eq!(send(b, 2 * s, p, 0x10), Some(at), "port {p}");
    }
    a.stop_sync();
    b.stop_sync();
}
