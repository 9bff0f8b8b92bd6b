#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/seeds/<target>/): the frame shapes the unit
tests use (TCP/UDP over IPv4 and IPv6, VLAN and QinQ, IPv4 options and
fragments, IPv6 extension headers, ICMP errors embedding a flow, ARP), with
valid checksums, aimed at the VIPs the pipeline target configures."""
import os, struct

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

def eth(t, tags=()):
    h = bytes([2,0,0,0,0,0xfe, 2,0,0,0,2,1])
    for tpid, vid in tags: h += struct.pack('!HH', tpid, vid)
    return h + struct.pack('!H', t)

def ipv4(src, dst, proto, payload, ttl=64, flags=0x4000, ident=1, opts=b''):
    ihl = 5 + len(opts) // 4
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, ihl*4 + len(payload), ident, flags, ttl, proto, 0, bytes(src), bytes(dst)) + opts
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload

def l4sum(src, dst, proto, seg, v6=False):
    if v6: ph = bytes(src) + bytes(dst) + struct.pack('!IxxxB', len(seg), proto)
    else: ph = bytes(src) + bytes(dst) + struct.pack('!xBH', proto, len(seg))
    return csum(ph + seg)

def tcp(src, dst, sport, dport, flags, v6=False, data=b''):
    seg = struct.pack('!HHIIBBHHH', sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + data
    c = l4sum(src, dst, 6, seg, v6)
    return seg[:16] + struct.pack('!H', c) + seg[18:]

def udp(src, dst, sport, dport, data, v6=False):
    seg = struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data
    c = l4sum(src, dst, 17, seg, v6) or 0xffff
    return seg[:6] + struct.pack('!H', c) + seg[8:]

def ipv6(src, dst, nh, payload, hl=64):
    return struct.pack('!IHBB16s16s', 6 << 28, len(payload), nh, hl, bytes(src), bytes(dst)) + payload

C4 = [198,18,0,1]; VIP4 = [198,18,255,1]
C6 = [0x20,1,0xd,0xb8,2,0,0,0,0,0,0,0,0,0,0,1]; VIP6 = [0x20,1,0xd,0xb8,0xff,0,0,0,0,0,0,0,0,0,0,1]
frames = {}
frames['tcp_syn'] = eth(0x0800) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40000, 80, 0x02))
frames['tcp_ack'] = eth(0x0800) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40000, 80, 0x10, data=b'GET / HTTP/1.0\r\n\r\n'))
frames['tcp_fin'] = eth(0x0800) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40000, 80, 0x11))
frames['udp_any'] = eth(0x0800) + ipv4(C4, VIP4, 17, udp(C4, VIP4, 5353, 9999, b'hello'))
frames['vlan'] = eth(0x0800, [(0x8100, 10)]) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40001, 80, 0x02))
frames['qinq'] = eth(0x0800, [(0x88a8, 100), (0x8100, 10)]) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40002, 80, 0x02))
frames['ipv4_opts'] = eth(0x0800) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40003, 80, 0x02), opts=bytes([0x94,4,0,0]))
u = udp(C4, VIP4, 7, 9, b'x' * 40)
frames['frag_first'] = eth(0x0800) + ipv4(C4, VIP4, 17, u[:24], flags=0x2000, ident=0x4242)
frames['frag_last'] = eth(0x0800) + ipv4(C4, VIP4, 17, u[24:], flags=3, ident=0x4242)
frames['ttl1'] = eth(0x0800) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40004, 80, 0x02), ttl=1)
frames['big_df'] = eth(0x0800) + ipv4(C4, VIP4, 6, tcp(C4, VIP4, 40005, 80, 0x10, data=b'z' * 1440))
frames['v6_udp'] = eth(0x86dd) + ipv6(C6, VIP6, 17, udp(C6, VIP6, 5000, 53, b'q', v6=True))
hbh = bytes([60, 0, 1, 4, 0, 0, 0, 0]); dopt = bytes([44, 0, 1, 4, 0, 0, 0, 0])
fragh = struct.pack('!BBHI', 17, 0, 0, 0x11223344)
frames['v6_ext'] = eth(0x86dd) + ipv6(C6, VIP6, 0, hbh + dopt + fragh + udp(C6, VIP6, 5001, 53, b'q', v6=True))
inner = ipv4(VIP4, C4, 6, tcp(VIP4, C4, 80, 40000, 0x10))[:28]
icmp = struct.pack('!BBHHH', 3, 4, 0, 0, 1400) + inner
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
frames['icmp_frag_needed'] = eth(0x0800) + ipv4([198,18,7,7], VIP4, 1, icmp)
echo = struct.pack('!BBHHH', 8, 0, 0, 1, 1) + b'ping'
echo = echo[:2] + struct.pack('!H', csum(echo)) + echo[4:]
frames['icmp_echo'] = eth(0x0800) + ipv4(C4, VIP4, 1, echo)
frames['arp'] = eth(0x0806) + bytes([0,1,8,0,6,4,0,1]) + bytes(20)
frames['not_vip'] = eth(0x0800) + ipv4(C4, [198,18,0,9], 6, tcp(C4, [198,18,0,9], 1, 80, 0x02))

here = os.path.dirname(os.path.abspath(__file__))
def write(target, name, data):
    d = os.path.join(here, 'seeds', target); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), 'wb').write(data)
for n, f in frames.items():
    write('parse', n, f)
# pipeline: a selector byte, then length-prefixed frames (a SYN, the handshake ACK,
# an ACK that takes the fast path, a FIN, then the frame).
flow = [frames['tcp_syn'], frames['tcp_ack'], frames['tcp_ack'], frames['tcp_fin']]
for sel, (n, f) in enumerate(frames.items()):
    body = b''.join(struct.pack('<H', len(x)) + x for x in flow + [f])
    write('pipeline', n, bytes([sel * 7 % 256]) + body)
