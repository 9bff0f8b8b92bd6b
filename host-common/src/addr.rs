//! MAC parsing and `std::net` addresses in the core's layout (family plus 16
//! bytes, IPv4 in the first four).

use std::net::IpAddr;

use marllb_core::classify::{Vip, VipProto};
use marllb_core::wire::IpFamily;

/// Parses a MAC address: six groups of one or two hex digits separated by `:`
/// or `-` (`02:00:00:00:01:0a`, `2-0-0-0-1-a`), as VPP's own commands accept.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        // `from_str_radix` alone would take a leading `+`.
        if n == 6 || !(1..=2).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

/// A MAC as `aa:bb:cc:dd:ee:ff` (what [`parse_mac`] reads back).
pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An address as the core stores it: family and 16 bytes (IPv4 in the first
/// four, the rest zero).
pub fn family_addr(ip: IpAddr) -> (IpFamily, [u8; 16]) {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            a[..4].copy_from_slice(&v4.octets());
            (IpFamily::V4, a)
        }
        IpAddr::V6(v6) => (IpFamily::V6, v6.octets()),
    }
}

/// The core's VIP for an address, protocol and port (0 = any).
pub fn vip(ip: IpAddr, proto: VipProto, port: u16) -> Vip {
    match ip {
        IpAddr::V4(a) => Vip::v4(a.octets(), proto, port),
        IpAddr::V6(a) => Vip::v6(a.octets(), proto, port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:01:0a"), Some([2, 0, 0, 0, 1, 10]));
        assert_eq!(
            parse_mac("aa-bb-cc-dd-ee-ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        assert_eq!(parse_mac("2:0:0:0:1:a"), Some([2, 0, 0, 0, 1, 10]));
        for bad in [
            "",
            "02:00:00:00:01",
            "02:00:00:00:01:0a:00",
            "02:00:00:00:01:",
            "02:00:zz",
            "aa:bb:cc:dd:ee:fg",
            "02:00:00:00:01:00a",
            "+2:00:00:00:01:0a",
            "02::00:00:01:0a",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn addresses_in_the_core_layout() {
        let (f, a) = family_addr("198.18.0.1".parse().expect("v4"));
        assert_eq!(f, IpFamily::V4);
        assert_eq!(a[..4], [198, 18, 0, 1]);
        assert!(a[4..].iter().all(|b| *b == 0));
        let (f, a) = family_addr("2001:db8::1".parse().expect("v6"));
        assert_eq!(f, IpFamily::V6);
        assert_eq!((a[0], a[1], a[15]), (0x20, 0x01, 1));
        assert_eq!(
            vip("198.18.255.1".parse().expect("v4"), VipProto::Tcp, 80),
            Vip::v4([198, 18, 255, 1], VipProto::Tcp, 80)
        );
    }
}
