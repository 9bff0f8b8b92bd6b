//! Typed zero-copy views over packet bytes, one protocol per file, in the style of
//! smoltcp: `Packet<T: AsRef<[u8]>>` with `new_unchecked` / `check_len` /
//! `new_checked`, field offsets as `const` ranges in a private `mod field`, getters on
//! `AsRef<[u8]>` and setters on `AsMut<[u8]>`. No function here panics after
//! `check_len` succeeded, and `new_checked` never panics at all.

pub mod checksum;
pub mod meta;

pub use meta::{FragInfo, Frame, IpFamily, PacketMeta};
