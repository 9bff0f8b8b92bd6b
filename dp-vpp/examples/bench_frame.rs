//! The node's glue against the core it wraps, in one run: the same frames of
//! the benchmark trace (`gen_trace`'s: 64-byte IPv4/TCP frames to
//! 198.18.255.1:80, flows of ten packets, one SYN and nine ACKs, 64 flows
//! interleaved), GRE4 to four servers, through
//!
//! * `frame`: [`process_frame`] over `vlib_buffer_t`s as `ethernet-input`
//!   leaves them (what `marllb-ip4` runs per frame, minus VPP's own calls), and
//! * `core`: [`Worker::process`] over packet views of the same buffers (the
//!   core's share of it).
//!
//! The difference is the glue: mapping buffers onto views and verdicts onto
//! next nodes and buffer metadata.
//!
//! `bench_frame [--frame N] [--packets P] [--only frame|core]`: frames of `N`
//! buffers (default 256), `P` packets (default 327 680, two passes of the
//! trace). Without `--only` both run, interleaved frame by frame, and the
//! nanoseconds per packet of each are printed. Under callgrind, count one
//! of them:
//!
//! ```text
//! valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='*callgrind_measured*' bench_frame --only frame
//! ```
//!
//! and divide the instructions by the packets printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{alloc_zeroed, Layout};
use std::time::{Duration, Instant};

use marllb_core::classify::Verdict;
use marllb_core::pipeline::{Packet, Worker, CHUNK, MAX_BATCH};
use marllb_core::service::Service;
use marllb_vpp::cli::{parse_lb, Command};
use marllb_vpp::config::Config;
use marllb_vpp::frame::{
    meta, process_frame, vnet, FrameBuffers, FrameCounts, NodeFamily, HEADER_SIZE, NO_MACS,
    PRE_DATA,
};
use marllb_vpp::runtime::FlowWorker;
use vpp_plugin::bindings::{
    vlib_buffer_t, VNET_BUFFER_F_L2_HDR_OFFSET_VALID, VNET_BUFFER_F_L3_HDR_OFFSET_VALID,
};
use zerocopy::FromZeros;

const DATA_SIZE: usize = 2048;
const STRIDE: usize = HEADER_SIZE + DATA_SIZE;
const SLOTS: usize = MAX_BATCH;

fn service() -> Box<Service> {
    let mut c = Config::default();
    for l in [
        "conf ip4-src-address 198.19.1.1",
        "set-vip 198.18.255.1 protocol tcp port 80 encap gre4",
        "set-servers 198.19.0.10 198.19.0.11 198.19.0.12 198.19.0.13",
    ] {
        match parse_lb(l).unwrap() {
            Command::SetVip(v) => c.set_vip(v).unwrap(),
            Command::SetServers { servers } => c.servers = servers,
            Command::Conf(x) => c.apply_conf(&x),
            other => panic!("{other:?}"),
        }
    }
    c.build(None).unwrap()
}

/// The `i`-th frame of `gen_trace`'s trace (60 bytes, no FCS).
fn trace_frame(i: usize) -> [u8; 60] {
    const GROUP: usize = 64;
    const PER_FLOW: usize = 10;
    let group = i / (GROUP * PER_FLOW);
    let round = (i / GROUP) % PER_FLOW;
    let id = (group * GROUP + i % GROUP) as u32;
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 2, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[198, 18, (id >> 8) as u8, id as u8]);
    ip[16..20].copy_from_slice(&[198, 18, 255, 1]);
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&(1024 + (id % 60000) as u16).to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&(round as u32).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = if round == 0 { 0x02 } else { 0x10 };
    tcp[14..16].copy_from_slice(&8192u16.to_be_bytes());
    f
}

/// 64-byte aligned buffers, like VPP's pool; never freed (the process ends).
struct Arena(*mut u8);

impl Arena {
    fn new() -> Self {
        let layout = Layout::from_size_align(SLOTS * STRIDE, 64).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        assert!(!p.is_null());
        Arena(p)
    }

    fn index(slot: usize) -> u32 {
        ((slot * STRIDE) >> 6) as u32
    }

    /// Buffer `slot` as `ethernet-input` leaves it on `ip4-unicast`.
    fn fill(&mut self, slot: usize, frame: &[u8; 60]) {
        // SAFETY: `slot < SLOTS`: a buffer of the allocation, not otherwise
        // referenced now.
        unsafe {
            let b = self.0.add(slot * STRIDE);
            std::ptr::copy_nonoverlapping(frame.as_ptr(), b.add(HEADER_SIZE), frame.len());
            let md = &mut *meta(b.cast::<vlib_buffer_t>());
            md.current_data = 14;
            md.current_length = 46;
            md.flags =
                (VNET_BUFFER_F_L2_HDR_OFFSET_VALID | VNET_BUFFER_F_L3_HDR_OFFSET_VALID) as u32;
            let vn = &mut *vnet(md);
            vn.sw_if_index = [1, u32::MAX];
            vn.l2_hdr_offset = 0;
            vn.l3_hdr_offset = 14;
        }
    }
}

#[inline(never)]
fn callgrind_measured_frame(
    w: &mut FlowWorker,
    svc: &Service,
    now: u64,
    arena: &Arena,
    indices: &[u32],
) -> usize {
    let mut nexts = [0u16; MAX_BATCH];
    let mut verdicts = [Verdict::Host; MAX_BATCH];
    let mut counts = FrameCounts::default();
    // SAFETY: every index is a distinct buffer of the arena followed by
    // DATA_SIZE bytes of data, and nothing else references them now.
    unsafe {
        process_frame(
            w,
            svc,
            now,
            NodeFamily::Ip4,
            FrameBuffers {
                buffer_mem_start: arena.0,
                indices,
                data_size: DATA_SIZE,
                macs: &NO_MACS,
            },
            &mut nexts,
            &mut verdicts,
            &mut counts,
            None,
        )
    };
    counts.forwarded as usize
}

#[inline(never)]
fn callgrind_measured_core(
    w: &mut FlowWorker,
    svc: &Service,
    now: u64,
    pkts: &mut [Packet<'_>],
    verdicts: &mut [Verdict],
) {
    // In pieces of the core's chunk, as `process_frame` calls it.
    for (p, v) in pkts.chunks_mut(CHUNK).zip(verdicts.chunks_mut(CHUNK)) {
        w.process(svc, now, p, v);
    }
}

/// Views of the buffers `slots` (their frames at the start of `data`).
fn views<'a>(arena: &'a mut Arena, slots: &[usize]) -> Vec<Packet<'a>> {
    let base = arena.0;
    slots
        .iter()
        .map(|&s| {
            // SAFETY: distinct buffers of the arena (`s < SLOTS`), borrowed
            // from it as long as the views live.
            let v = unsafe {
                std::slice::from_raw_parts_mut(base.add(s * STRIDE + 128), PRE_DATA + DATA_SIZE)
            };
            Packet::new(v, PRE_DATA, 60)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let frame = arg("--frame").map_or(256, |v| v.parse::<usize>().unwrap().clamp(1, SLOTS));
    let packets = arg("--packets").map_or(327_680, |v| v.parse::<usize>().unwrap());
    let only = arg("--only").map(String::as_str);
    let svc = service();
    let mut arena = Arena::new();
    let mut wf: Box<FlowWorker> = Worker::new_box_zeroed().unwrap();
    wf.init(0);
    let mut wc: Box<FlowWorker> = Worker::new_box_zeroed().unwrap();
    wc.init(0);
    // The trace repeats every 163 840 packets, as the replay in VPP.
    let frames: Vec<[u8; 60]> = (0..163_840).map(trace_frame).collect();
    // Scattered buffer order, as a pool hands them out.
    let mut order: Vec<usize> = (0..SLOTS).collect();
    let mut x = 0x9e37_79b9_u32;
    for i in (1..SLOTS).rev() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        order.swap(i, x as usize % (i + 1));
    }
    let indices: Vec<u32> = order.iter().map(|&s| Arena::index(s)).collect();
    let (mut t_frame, mut t_core) = (Duration::ZERO, Duration::ZERO);
    let (mut fwd_frame, mut fwd_core) = (0, 0);
    let mut now = 1_000_000_000u64;
    let mut done = 0;
    while done < packets {
        let n = frame.min(packets - done);
        now += 10_000;
        if only != Some("core") {
            for k in 0..n {
                arena.fill(order[k], &frames[(done + k) % frames.len()]);
            }
            let t = Instant::now();
            fwd_frame += callgrind_measured_frame(&mut wf, &svc, now, &arena, &indices[..n]);
            t_frame += t.elapsed();
        }
        if only != Some("frame") {
            for k in 0..n {
                arena.fill(order[k], &frames[(done + k) % frames.len()]);
            }
            let mut pkts = views(&mut arena, &order[..n]);
            let mut verdicts = [Verdict::Host; MAX_BATCH];
            let t = Instant::now();
            callgrind_measured_core(&mut wc, &svc, now, &mut pkts, &mut verdicts[..n]);
            t_core += t.elapsed();
            fwd_core += verdicts[..n]
                .iter()
                .filter(|v| matches!(v, Verdict::Forward { .. }))
                .count();
        }
        done += n;
    }
    let per = |d: Duration| d.as_nanos() as f64 / packets as f64;
    println!(
        "packets={packets} frame={frame} forwarded: frame {fwd_frame}, core {fwd_core}; \
         ns per packet: frame {:.1}, core {:.1}, glue {:.1}",
        per(t_frame),
        per(t_core),
        per(t_frame) - per(t_core)
    );
}
