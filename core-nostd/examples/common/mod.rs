//! Traffic generation shared by the demo and the benchmark.
#![allow(dead_code)]

use marllb_core::classify::{Vip, VipProto};
use marllb_core::rewrite::{Egress, Encap};
use marllb_core::select::Method;
use marllb_core::service::{AdminState, Backend, Service};
use marllb_core::wire::checksum;
use marllb_core::wire::IpFamily;
use marllb_core::WEIGHT_ONE;

/// Headroom in front of every generated frame (as in a DPDK mbuf).
pub const HEADROOM: usize = 128;
/// Room for one frame buffer (headroom + a 64-byte frame + slack).
pub const BUF: usize = 256;
/// The VIP every generated flow goes to.
pub const VIP: [u8; 4] = [198, 18, 255, 1];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
pub const LB_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Client address and port of flow `id` (a 32-bit flow number): clients are
/// spread over 198.18.0.0/16 with ports 1024..65535.
pub fn client_of(id: u32) -> ([u8; 4], u16) {
    let host = id % 65_000;
    let port = 1024 + (id / 65_000) as u16;
    let a = 0xc612_0000u32 | (host + 1);
    (a.to_be_bytes(), port)
}

/// Writes a minimal 60-byte (64 on the wire) Ethernet/IPv4/TCP frame of flow `id`
/// with `flags` at `buf[HEADROOM..]`; returns its length.
pub fn tcp_frame(buf: &mut [u8], id: u32, dport: u16, flags: u8, ttl: u8) -> usize {
    let (src, sport) = client_of(id);
    let f = &mut buf[HEADROOM..HEADROOM + 60];
    f[0..6].copy_from_slice(&LB_MAC);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip.copy_from_slice(&[
        0x45, 0, 0, 40, 0, 0, 0x40, 0, ttl, 6, 0, 0, src[0], src[1], src[2], src[3], VIP[0],
        VIP[1], VIP[2], VIP[3],
    ]);
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..54];
    tcp.copy_from_slice(&[0; 20]);
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&id.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut s = checksum::pseudo_header_v4(&src, &VIP, 6, 20);
    s = checksum::sum(s, tcp);
    let c = !checksum::fold(s);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    f[54..60].copy_from_slice(&[0; 6]);
    60
}

/// Backend `i` of a test deployment (198.19.0.10 + i).
pub fn backend(i: usize, weight: u32) -> Backend {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[198, 19, (i >> 8) as u8, 10 + i as u8]);
    Backend {
        family: IpFamily::V4,
        admin: AdminState::Active,
        mac: [2, 0, 0, 0, 1, i as u8],
        addr,
        weight,
        base_weight: WEIGHT_ONE,
    }
}

/// A service with one TCP VIP on port 80 over `weights.len()` backends.
pub fn service(method: Method, encap: Encap, weights: &[u32]) -> Box<Service> {
    use zerocopy::FromZeros;
    let mut s = Service::new_box_zeroed().expect("allocate the service");
    s.hash_seed = 0x6d61_726c_6c62;
    s.set_egress(Egress {
        src_mac: LB_MAC,
        src_v4: [198, 19, 0, 1],
        src_v6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        mtu: 1500,
    });
    let bs: Vec<Backend> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| backend(i, *w))
        .collect();
    s.set_backends(&bs).expect("backends");
    let members: Vec<u16> = (0..weights.len() as u16).collect();
    s.add_vip(Vip::v4(VIP, VipProto::Tcp, 80), method, encap, &members)
        .expect("vip");
    s
}

/// A global allocator that backs every allocation of 2 MiB or more with
/// transparent huge pages (2 MiB-aligned anonymous mmap + MADV_HUGEPAGE), the way
/// a DPDK host keeps its tables in hugepage memory. Small allocations go to the
/// system allocator. Both sides of a benchmark use it.
pub struct HugePageAlloc;

const HUGE: usize = 2 << 20;

// SAFETY: `alloc` returns either the system allocator's block or a fresh,
// exclusively owned, suitably aligned anonymous mapping of at least `size` bytes;
// `dealloc` releases each through the same path it came from (decided by the same
// size test on the same layout).
unsafe impl std::alloc::GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() < HUGE || layout.align() > HUGE {
            // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
            return unsafe { std::alloc::System.alloc(layout) };
        }
        let len = layout.size().div_ceil(HUGE) * HUGE;
        // SAFETY: an anonymous private mapping has no preconditions; failure is
        // reported as MAP_FAILED and turned into a null return below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + HUGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let base = p as usize;
        let aligned = base.div_ceil(HUGE) * HUGE;
        // SAFETY: both ranges lie inside the mapping just created and are not
        // used by anyone: the unaligned head and the tail beyond `len`.
        unsafe {
            if aligned > base {
                libc::munmap(p, aligned - base);
            }
            let tail = base + len + HUGE - (aligned + len);
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        aligned as *mut u8
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() < HUGE || layout.align() > HUGE {
            // SAFETY: forwarded with the caller's layout.
            return unsafe { std::alloc::System.alloc_zeroed(layout) };
        }
        // SAFETY: same contract; fresh anonymous mappings are zero-filled.
        unsafe { self.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if layout.size() < HUGE || layout.align() > HUGE {
            // SAFETY: this block came from the system allocator with this layout.
            return unsafe { std::alloc::System.dealloc(ptr, layout) };
        }
        let len = layout.size().div_ceil(HUGE) * HUGE;
        // SAFETY: `ptr..ptr+len` is exactly the mapping `alloc` kept.
        unsafe {
            libc::munmap(ptr as *mut libc::c_void, len);
        }
    }
}
