//! Writes the benchmark trace: 64-byte IPv4/TCP frames (60 bytes + FCS on the
//! wire) to the VIP 198.18.255.1:80 from many clients; flows of ten packets
//! (one SYN, nine ACKs), 64 flows interleaved at a time, so 10% are SYNs.
//!
//! `gen_trace OUT.pcap [PACKETS]` (default 32768).

use std::io::BufWriter;

use marllb_dpdk::trace::{flags, PcapWriter, Tcp4};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "trace.pcap".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32768);
    let mut w = PcapWriter::new(BufWriter::new(std::fs::File::create(&out)?))?;
    const GROUP: usize = 64;
    const PER_FLOW: usize = 10;
    let mut written = 0;
    let mut group = 0u32;
    'outer: loop {
        for round in 0..PER_FLOW {
            for k in 0..GROUP as u32 {
                if written == n {
                    break 'outer;
                }
                let id = group * GROUP as u32 + k;
                let t = Tcp4 {
                    dst_mac: [2, 0, 0, 0, 0, 0xfe],
                    src_mac: [2, 0, 0, 0, 2, 1],
                    src: [198, 18, (id >> 8) as u8, id as u8],
                    dst: [198, 18, 255, 1],
                    sport: 1024 + (id % 60000) as u16,
                    dport: 80,
                    flags: if round == 0 { flags::SYN } else { flags::ACK },
                    ttl: 64,
                    seq: round as u32,
                    payload: 0,
                };
                w.write(&t.frame())?;
                written += 1;
            }
        }
        group += 1;
    }
    w.finish()?;
    println!(
        "wrote {written} frames ({} flows) to {out}",
        group as usize * GROUP
    );
    Ok(())
}
