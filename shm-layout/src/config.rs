//! The configuration image: what the data plane serves, so the controller can
//! check it manages the same backends.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use marllb_core::service::Service;
use marllb_core::wire::IpFamily;
use marllb_core::MAX_BACKENDS;
use zerocopy::FromZeros;

use crate::layout::{BackendEntry, ConfigImage, VipEntry, MAX_VIPS};

fn ip(family: u8, addr: &[u8; 16]) -> Option<IpAddr> {
    match family {
        0 => Some(IpAddr::V4(Ipv4Addr::new(
            addr[0], addr[1], addr[2], addr[3],
        ))),
        1 => Some(IpAddr::V6(Ipv6Addr::from(*addr))),
        _ => None,
    }
}

impl BackendEntry {
    /// The backend's address; `None` for an unknown family byte.
    pub fn ip(&self) -> Option<IpAddr> {
        ip(self.family, &self.addr)
    }
}

impl VipEntry {
    /// The VIP's address; `None` for an unknown family byte.
    pub fn ip(&self) -> Option<IpAddr> {
        ip(self.family, &self.addr)
    }
}

/// One difference between the region's backends and the controller's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendMismatch {
    /// Backend `index` has different addresses (`ours` is the region's; `None`
    /// for an unknown family byte).
    Differs {
        /// Global backend index.
        index: usize,
        /// In the region.
        ours: Option<IpAddr>,
        /// In the controller's list.
        theirs: IpAddr,
    },
    /// The controller lists a backend the region does not have.
    MissingInRegion {
        /// Index in the controller's list.
        index: usize,
        /// Its address.
        theirs: IpAddr,
    },
    /// The region has a backend the controller does not list.
    ExtraInRegion {
        /// Global backend index.
        index: usize,
        /// Its address.
        ours: Option<IpAddr>,
    },
}

impl core::fmt::Display for BackendMismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Differs {
                index,
                ours,
                theirs,
            } => match ours {
                Some(o) => write!(
                    f,
                    "backend {index}: data plane has {o}, controller has {theirs}"
                ),
                None => write!(
                    f,
                    "backend {index}: data plane has an invalid address, controller has {theirs}"
                ),
            },
            Self::MissingInRegion { index, theirs } => {
                write!(
                    f,
                    "backend {index} ({theirs}) is not served by the data plane"
                )
            }
            Self::ExtraInRegion { index, ours } => match ours {
                Some(o) => write!(f, "backend {index} ({o}) is not managed by the controller"),
                None => write!(
                    f,
                    "backend {index} (invalid address) is not managed by the controller"
                ),
            },
        }
    }
}

/// Iterator over [`BackendMismatch`]es, by index.
#[derive(Debug)]
pub struct Mismatches<'a> {
    ours: &'a [BackendEntry],
    theirs: &'a [IpAddr],
    i: usize,
}

impl Iterator for Mismatches<'_> {
    type Item = BackendMismatch;

    fn next(&mut self) -> Option<BackendMismatch> {
        loop {
            let i = self.i;
            if i >= self.ours.len().max(self.theirs.len()) {
                return None;
            }
            self.i += 1;
            match (self.ours.get(i), self.theirs.get(i)) {
                (Some(o), Some(&t)) => {
                    let ours = o.ip();
                    if ours != Some(t) {
                        return Some(BackendMismatch::Differs {
                            index: i,
                            ours,
                            theirs: t,
                        });
                    }
                }
                (None, Some(&t)) => {
                    return Some(BackendMismatch::MissingInRegion {
                        index: i,
                        theirs: t,
                    })
                }
                (Some(o), None) => {
                    return Some(BackendMismatch::ExtraInRegion {
                        index: i,
                        ours: o.ip(),
                    })
                }
                (None, None) => return None,
            }
        }
    }
}

/// Why a service could not be described.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigImageError {
    /// The service has no backends.
    NoBackends,
}

impl ConfigImage {
    /// Describes the service a data plane serves.
    pub fn from_service(svc: &Service) -> Result<ConfigImage, ConfigImageError> {
        let mut c = ConfigImage::new_zeroed();
        let backends = svc.backends();
        if backends.is_empty() {
            return Err(ConfigImageError::NoBackends);
        }
        let vips = svc.vip_services();
        for (i, (e, b)) in c.backends.iter_mut().zip(backends).enumerate() {
            let vip_mask = vips
                .iter()
                .take(MAX_VIPS)
                .enumerate()
                .filter(|(_, v)| v.members().contains(&(i as u16)))
                .fold(0u32, |m, (k, _)| m | 1 << k);
            *e = BackendEntry {
                addr: b.addr,
                mac: b.mac,
                family: b.family as u8,
                admin: b.admin as u8,
                base_weight: b.base_weight,
                vip_mask,
            };
        }
        c.n_backends = backends.len().min(MAX_BACKENDS) as u32;
        for (e, v) in c.vips.iter_mut().zip(vips) {
            *e = VipEntry {
                addr: v.vip.addr,
                port: v.vip.port,
                proto: v.vip.proto as u8,
                family: v.vip.family as u8,
                method: v.method.as_u8(),
                encap: v.encap as u8,
                _reserved: [0; 10],
            };
        }
        c.n_vips = vips.len().min(MAX_VIPS) as u32;
        Ok(c)
    }

    /// Configured backends (clamped to the capacity: the count is untrusted).
    pub fn backends(&self) -> &[BackendEntry] {
        let n = (self.n_backends as usize).min(MAX_BACKENDS);
        &self.backends[..n]
    }

    /// Configured VIPs (clamped).
    pub fn vips(&self) -> &[VipEntry] {
        let n = (self.n_vips as usize).min(MAX_VIPS);
        &self.vips[..n]
    }

    /// Compares the backends with the controller's list, index by index: empty
    /// when the controller manages exactly the backends the data plane serves.
    pub fn diff_backends<'a>(&'a self, theirs: &'a [IpAddr]) -> Mismatches<'a> {
        Mismatches {
            ours: self.backends(),
            theirs,
            i: 0,
        }
    }
}

// IpFamily's discriminants are what `family` bytes store.
const _: () = assert!(IpFamily::V4 as u8 == 0 && IpFamily::V6 as u8 == 1);
