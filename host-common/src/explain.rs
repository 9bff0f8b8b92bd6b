//! Which backend the consistent (Maglev) table gives a flow: where a packet of
//! an established connection goes on an LB node that has no state for it (the
//! node took the connection over from another, or restarted). The answer is
//! computed the way the core's pipeline places such a packet: the same VIP
//! match (the most specific VIP wins), the same flow hash, the same table.

use std::net::IpAddr;

use marllb_core::classify::{is_host_icmp, is_martian_source, match_vip, VipMatch};
use marllb_core::flow::FlowKey;
use marllb_core::hash::flow_hash;
use marllb_core::service::Service;
use marllb_core::wire::meta::ip_proto;
use marllb_core::wire::PacketMeta;

use crate::addr::family_addr;

/// A flow as the client sends it: client address and port, VIP address and
/// port, IP protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Client address.
    pub src: IpAddr,
    /// Client port.
    pub sport: u16,
    /// VIP address.
    pub dst: IpAddr,
    /// VIP port.
    pub dport: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
}

/// The backend index `svc`'s consistent table gives a packet of `flow` that
/// finds no flow entry; `None` when the data plane would not forward it at all
/// (no VIP matches, the source is impossible for a client, a host-stack ICMP
/// message, the address families differ) or the VIP's consistent table is
/// empty. With the `maglev` method this is where every packet of the flow
/// goes; with the others, where a mid-flow packet without state goes.
pub fn consistent_backend(svc: &Service, flow: &Flow) -> Option<u16> {
    let (family, src) = family_addr(flow.src);
    let (dst_family, dst) = family_addr(flow.dst);
    if family != dst_family {
        return None;
    }
    // The parser reports ports only for TCP and UDP.
    let ported = matches!(flow.proto, ip_proto::TCP | ip_proto::UDP);
    let (sport, dport) = if ported {
        (flow.sport, flow.dport)
    } else {
        (0, 0)
    };
    let m = PacketMeta {
        family,
        proto: flow.proto,
        src,
        dst,
        sport,
        dport,
        outer_src: src,
        ..PacketMeta::default()
    };
    let VipMatch::Vip(i) = match_vip(svc.vip_list(), &m) else {
        return None;
    };
    if is_host_icmp(&m) || is_martian_source(family, &src) {
        return None;
    }
    let hash = flow_hash(&FlowKey::from_meta(&m), svc.hash_seed);
    svc.vip(i)?.consistent(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{backend, ServiceSpec, ServiceVip};
    use marllb_core::classify::{Verdict, Vip, VipProto};
    use marllb_core::flow::Timeouts;
    use marllb_core::pipeline::{Packet, Worker};
    use marllb_core::rewrite::{Egress, Encap};
    use marllb_core::select::Method;
    use marllb_core::WEIGHT_ONE;
    use zerocopy::FromZeros;

    const VIP: [u8; 4] = [198, 18, 255, 1];
    const HEADROOM: usize = 128;

    /// An any-port VIP on backends 0..3 listed before a port-80 VIP on 3..6,
    /// same address: a first hit explains port 80 by the wrong one.
    fn overlapping() -> ServiceSpec {
        ServiceSpec {
            hash_seed: 0x1234,
            verify_checksums: true,
            egress: Egress {
                src_mac: [2, 0, 0, 0, 0, 0xfe],
                src_v4: [198, 19, 0, 1],
                mtu: 1500,
                ..Egress::default()
            },
            timeouts: Timeouts::default(),
            backends: (0..6u8)
                .map(|i| {
                    backend(
                        IpAddr::from([198, 19, 0, 10 + i]),
                        [2, 0, 0, 0, 1, i],
                        WEIGHT_ONE,
                    )
                })
                .collect(),
            vips: vec![
                ServiceVip {
                    vip: Vip::v4(VIP, VipProto::Tcp, 0),
                    method: Method::Alias,
                    encap: Encap::IpIp,
                    members: vec![0, 1, 2],
                },
                ServiceVip {
                    vip: Vip::v4(VIP, VipProto::Tcp, 80),
                    method: Method::Alias,
                    encap: Encap::IpIp,
                    members: vec![3, 4, 5],
                },
            ],
        }
    }

    /// A mid-flow TCP segment (ACK, no SYN) from `client:sport` to `VIP:dport`.
    fn ack(client: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 0, 0xfe])
            .ipv4(client, VIP, 64)
            .tcp(sport, dport, 1000, 65535)
            .ack(1);
        let mut out = vec![0u8; HEADROOM];
        b.write(&mut out, &[0u8; 6]).expect("frame");
        out
    }

    fn flow(client: [u8; 4], sport: u16, dport: u16) -> Flow {
        Flow {
            src: IpAddr::from(client),
            sport,
            dst: IpAddr::from(VIP),
            dport,
            proto: 6,
        }
    }

    #[test]
    fn agrees_with_the_pipeline_on_overlapping_vips() {
        let svc = overlapping().build(None, None).expect("service");
        let mut w = Worker::<4096>::new_box_zeroed().expect("worker");
        w.init(1);
        let mut seen = [0u32; 6];
        for (k, dport) in [80u16, 81, 443].iter().cycle().take(600).enumerate() {
            let client = [198, 18, 1, (k % 200) as u8 + 1];
            let sport = 20_000 + k as u16;
            let mut buf = ack(client, sport, *dport);
            let len = buf.len() - HEADROOM;
            let v = w.process_one(
                &svc,
                1_000_000_000,
                &mut Packet::new(&mut buf, HEADROOM, len),
            );
            let Verdict::Forward { backend } = v else {
                panic!("not forwarded: {v:?}");
            };
            assert_eq!(
                consistent_backend(&svc, &flow(client, sport, *dport)),
                Some(backend)
            );
            // Port 80 is the port-80 VIP's (backends 3..6), the rest the any-port one's.
            assert_eq!(
                backend >= 3,
                *dport == 80,
                "port {dport} on backend {backend}"
            );
            seen[usize::from(backend)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
        assert_eq!(w.telemetry.global.maglev_fallback, 600);
    }

    #[test]
    fn no_answer_where_the_data_plane_forwards_nothing() {
        let svc = overlapping().build(None, None).expect("service");
        let ok = flow([198, 18, 1, 2], 1234, 80);
        assert!(consistent_backend(&svc, &ok).is_some());
        for f in [
            Flow { proto: 17, ..ok }, // no UDP VIP
            Flow {
                dst: IpAddr::from([198, 18, 255, 2]),
                ..ok
            }, // not a VIP
            Flow {
                src: IpAddr::from([127, 0, 0, 1]),
                ..ok
            }, // martian
            Flow {
                src: "2001:db8::1".parse().expect("v6"),
                ..ok
            },
        ] {
            assert_eq!(consistent_backend(&svc, &f), None, "{f:?}");
        }
    }
}
