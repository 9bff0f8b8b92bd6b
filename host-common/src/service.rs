//! The host-neutral service model and the one way to build the core's
//! [`Service`] from it.
//!
//! # Contract
//!
//! A host's front end (dp-dpdk's TOML, dp-vpp's CLI) checks what it can name
//! in its own words and fills a [`ServiceSpec`]; [`ServiceSpec::build`] then
//! makes a fresh [`Service`] in a fixed order (seed and egress, backends,
//! timeouts, VIPs, then the controller's admin states and weights), so that
//! both hosts serve the same configuration identically. A refusal says which
//! step and which entry ([`BuildError`]); the host words it.

use std::net::IpAddr;

use marllb_core::classify::Vip;
use marllb_core::flow::Timeouts;
use marllb_core::rewrite::{Egress, Encap};
use marllb_core::select::Method;
use marllb_core::service::{AdminState, Backend, ConfigError, Service};
use marllb_core::Weight;
use zerocopy::FromZeros;

use crate::addr::family_addr;

/// One VIP of a [`ServiceSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceVip {
    /// Address, protocol and port.
    pub vip: Vip,
    /// How new flows are placed.
    pub method: Method,
    /// How packets reach the backends.
    pub encap: Encap,
    /// Member backends (indices into [`ServiceSpec::backends`]).
    pub members: Vec<u16>,
}

/// Everything a [`Service`] is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Flow-hash seed (equal on every LB node of a deployment).
    pub hash_seed: u64,
    /// Verify IPv4 header checksums in the core (off when the host or NIC did).
    pub verify_checksums: bool,
    /// Our side of the backend link.
    pub egress: Egress,
    /// Flow-table idle timeouts.
    pub timeouts: Timeouts,
    /// Backends, by index; weight and base weight are the configured weight.
    pub backends: Vec<Backend>,
    /// VIPs, by index (the order the classifier sees them in).
    pub vips: Vec<ServiceVip>,
}

/// Why [`ServiceSpec::build`] refused: the step and entry, with the core's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The service tables (about 2.3 MB) could not be allocated.
    #[error("cannot allocate the service tables")]
    Alloc,
    /// The backend list.
    #[error("backends: {0:?}")]
    Backends(ConfigError),
    /// The timeouts.
    #[error("timeouts: {0:?}")]
    Timeouts(ConfigError),
    /// VIP `index` of [`ServiceSpec::vips`].
    #[error("vip[{index}]: {error:?}")]
    Vip {
        /// Index in [`ServiceSpec::vips`].
        index: usize,
        /// The core's reason.
        error: ConfigError,
    },
    /// The admin state of backend `backend`.
    #[error("admin[{backend}]: {error:?}")]
    Admin {
        /// Backend index.
        backend: u16,
        /// The core's reason.
        error: ConfigError,
    },
}

/// Why a backend set could not replace a spec's backends (the spec is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Entry `index` has an unknown address family.
    #[error("backend set entry {index}: unknown address family")]
    Family {
        /// Global index.
        index: usize,
    },
    /// The service does not build from it.
    #[error("{0}")]
    Build(BuildError),
}

/// A backend at `addr` with `mac`, active, with `weight` as both its dynamic
/// and its base (configured) weight.
pub fn backend(addr: IpAddr, mac: [u8; 6], weight: Weight) -> Backend {
    let (family, addr) = family_addr(addr);
    Backend {
        family,
        admin: AdminState::Active,
        mac,
        addr,
        weight,
        base_weight: weight,
    }
}

impl ServiceSpec {
    /// This spec with the controller's backend set in place of its backends
    /// (see `marllb_shm::backend_set`): entry `i` is backend `i`; a removed
    /// entry stays as a down backend in no VIP (its flows are re-placed); a
    /// served one is a member of the VIPs its mask names. Indices that keep
    /// their address keep their configured admin state and their place in
    /// each VIP's member list; new members follow in index order. The result
    /// is checked by building it once.
    pub fn with_backend_set(
        &self,
        entries: &[marllb_shm::layout::BackendEntry],
    ) -> Result<ServiceSpec, SetError> {
        use marllb_shm::backend_set::served;
        let mut backends = Vec::with_capacity(entries.len());
        for (index, e) in entries.iter().enumerate() {
            let ip = e.ip().ok_or(SetError::Family { index })?;
            let mut b = backend(ip, e.mac, e.base_weight);
            match self.backends.get(index) {
                _ if !served(e) => {
                    b.admin = AdminState::Down;
                    b.weight = 0;
                    b.base_weight = 0;
                }
                Some(old) if old.family == b.family && old.addr == b.addr => b.admin = old.admin,
                _ => {}
            }
            backends.push(b);
        }
        let member = |i: usize, v: usize| {
            entries
                .get(i)
                .is_some_and(|e| served(e) && v < 32 && e.vip_mask & (1 << v) != 0)
        };
        let vips = self
            .vips
            .iter()
            .enumerate()
            .map(|(v, sv)| {
                let mut members: Vec<u16> = sv
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| {
                        member(usize::from(m), v)
                            && self
                                .backends
                                .get(usize::from(m))
                                .map(|b| (b.family, b.addr))
                                == backends.get(usize::from(m)).map(|b| (b.family, b.addr))
                    })
                    .collect();
                for i in 0..entries.len() {
                    if member(i, v) && !members.contains(&(i as u16)) {
                        members.push(i as u16);
                    }
                }
                ServiceVip {
                    members,
                    ..sv.clone()
                }
            })
            .collect();
        let spec = ServiceSpec {
            backends,
            vips,
            ..self.clone()
        };
        spec.build(None, None).map_err(SetError::Build)?;
        Ok(spec)
    }

    /// Builds the service, with the controller's decision on top when given:
    /// `admin` states and `weights` by backend index (entries past the backend
    /// list are ignored; missing weights keep the configured weight).
    pub fn build(
        &self,
        weights: Option<&[Weight]>,
        admin: Option<&[AdminState]>,
    ) -> Result<Box<Service>, BuildError> {
        let mut svc = Service::new_box_zeroed().map_err(|_| BuildError::Alloc)?;
        svc.hash_seed = self.hash_seed;
        svc.verify_checksums = self.verify_checksums;
        svc.set_egress(self.egress);
        svc.set_backends(&self.backends)
            .map_err(BuildError::Backends)?;
        svc.set_timeouts(&self.timeouts)
            .map_err(BuildError::Timeouts)?;
        for (index, v) in self.vips.iter().enumerate() {
            svc.add_vip(v.vip, v.method, v.encap, &v.members)
                .map_err(|error| BuildError::Vip { index, error })?;
        }
        if let Some(adm) = admin {
            for ((b, &state), configured) in adm.iter().enumerate().zip(&self.backends) {
                // Setting the state a backend already has changes nothing but
                // costs a rebuild of every VIP's tables.
                if state != configured.admin {
                    svc.set_admin(b as u16, state)
                        .map_err(|error| BuildError::Admin {
                            backend: b as u16,
                            error,
                        })?;
                }
            }
        }
        if let Some(w) = weights {
            svc.set_weights(&w[..w.len().min(self.backends.len())]);
        }
        Ok(svc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marllb_core::classify::VipProto;
    use marllb_core::WEIGHT_ONE;

    fn spec() -> ServiceSpec {
        let be = |i: u8| {
            backend(
                IpAddr::from([198, 19, 0, 10 + i]),
                [2, 0, 0, 0, 1, i],
                WEIGHT_ONE,
            )
        };
        ServiceSpec {
            hash_seed: 7,
            verify_checksums: true,
            egress: Egress {
                src_v4: [198, 19, 0, 1],
                mtu: 1500,
                ..Egress::default()
            },
            timeouts: Timeouts::default(),
            backends: vec![be(0), be(1), be(2)],
            vips: vec![
                ServiceVip {
                    vip: Vip::v4([198, 18, 255, 1], VipProto::Tcp, 80),
                    method: Method::Alias,
                    encap: Encap::IpIp,
                    members: vec![0, 1, 2],
                },
                ServiceVip {
                    vip: Vip::v4([198, 18, 255, 1], VipProto::Udp, 53),
                    method: Method::Sed,
                    encap: Encap::IpIp,
                    members: vec![2],
                },
            ],
        }
    }

    #[test]
    fn builds_what_the_spec_says() {
        let s = spec();
        let svc = s.build(None, None).expect("builds");
        assert_eq!(svc.backends(), &s.backends[..]);
        assert_eq!((svc.hash_seed, svc.verify_checksums), (7, true));
        assert_eq!(svc.egress(), &s.egress);
        assert_eq!(svc.vip_list().len(), 2);
        assert_eq!(svc.vip(1).map(|v| v.members()), Some(&[2u16][..]));
        assert!(svc.vip_services().iter().all(|v| v.live));
    }

    #[test]
    fn controller_decision_on_top() {
        let s = spec();
        // Missing weights keep the configured one; extra entries are ignored.
        let svc = s
            .build(
                Some(&[0, 3 * WEIGHT_ONE]),
                Some(&[
                    AdminState::Active,
                    AdminState::Active,
                    AdminState::Down,
                    AdminState::Down,
                ]),
            )
            .expect("builds");
        assert_eq!(
            svc.vip(0).map(|v| v.weights()),
            Some(&[0, 3 * WEIGHT_ONE, 0][..])
        );
        assert_eq!(
            svc.backend(2).map(|b| (b.weight, b.admin)),
            Some((WEIGHT_ONE, AdminState::Down))
        );
        assert_eq!(svc.backends().len(), 3);
        let svc = s.build(Some(&[WEIGHT_ONE; 8]), None).expect("builds");
        assert_eq!(svc.backends().len(), 3);
    }

    fn entries(s: &ServiceSpec) -> Vec<marllb_shm::layout::BackendEntry> {
        use marllb_shm::layout::{admin, BackendEntry};
        s.backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendEntry {
                addr: b.addr,
                mac: b.mac,
                family: b.family as u8,
                admin: admin::ACTIVE,
                base_weight: b.base_weight,
                vip_mask: s
                    .vips
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.members.contains(&(i as u16)))
                    .fold(0, |m, (k, _)| m | 1 << k),
            })
            .collect()
    }

    #[test]
    fn backend_set_adds_and_removes_keeping_indices() {
        use marllb_shm::layout::admin;
        let s = spec();
        let mut e = entries(&s);
        // The configuration's own set changes nothing.
        assert_eq!(s.with_backend_set(&e), Ok(s.clone()));
        let mut added = e[0];
        added.addr[3] = 40;
        added.vip_mask = 0b11;
        e.push(added);
        let t = s.with_backend_set(&e).expect("adds");
        assert_eq!(t.backends.len(), 4);
        assert_eq!(t.vips[0].members, vec![0, 1, 2, 3]);
        assert_eq!(t.vips[1].members, vec![2, 3]);
        // Removing index 1: down, in no VIP, its index kept.
        e[1].admin = admin::REMOVED;
        let u = t.with_backend_set(&e).expect("removes");
        assert_eq!(u.backends.len(), 4);
        assert_eq!(u.backends[1].admin, AdminState::Down);
        assert_eq!(u.vips[0].members, vec![0, 2, 3]);
        let svc = u.build(None, None).expect("builds");
        assert_eq!(svc.vip(0).map(|v| v.members()), Some(&[0u16, 2, 3][..]));
        // A VIP left with no member does not build: refused, spec unchanged.
        let mut only = entries(&s);
        only[2].vip_mask = 1;
        assert!(matches!(
            s.with_backend_set(&only),
            Err(SetError::Build(BuildError::Vip { index: 1, .. }))
        ));
        let mut bad = entries(&s);
        bad[0].family = 9;
        assert_eq!(s.with_backend_set(&bad), Err(SetError::Family { index: 0 }));
    }

    /// Adding or removing a backend moves few flows in the consistent table
    /// (Maglev): an add takes about 1/(N+1) of them, a removal only those on
    /// the removed backend, plus Maglev's small reshuffle among the others.
    #[test]
    fn backend_set_changes_the_consistent_table_minimally() {
        use marllb_shm::layout::admin;
        let s = spec();
        let mut e = entries(&s);
        let table = |sp: &ServiceSpec| {
            let svc = sp.build(None, None).expect("builds");
            (0..20_000u64)
                .map(|k| {
                    svc.vip(0)
                        .and_then(|v| v.consistent(k.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                })
                .collect::<Vec<_>>()
        };
        let before = table(&s);
        let mut added = e[0];
        added.addr[3] = 50;
        e.push(added);
        let grown = s.with_backend_set(&e).expect("adds");
        let after = table(&grown);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let to_new = after.iter().filter(|b| **b == Some(3)).count();
        let moved_frac = moved as f64 / before.len() as f64;
        let shuffled = moved
            - before
                .iter()
                .zip(&after)
                .filter(|(a, b)| a != b && **b == Some(3))
                .count();
        println!("add: {moved_frac:.3} of flows moved ({to_new} to the new backend, {shuffled} among the old)");
        assert!(moved_frac < 0.27, "{moved_frac}");
        assert!(shuffled * 500 < before.len(), "{shuffled}");
        // Remove index 1: flows on the others stay (all but Maglev's reshuffle).
        e[1].admin = admin::REMOVED;
        let shrunk = grown.with_backend_set(&e).expect("removes");
        let last = table(&shrunk);
        let kept_moved = after
            .iter()
            .zip(&last)
            .filter(|(a, b)| **a != Some(1) && a != b)
            .count();
        println!("remove: {kept_moved} flows of the remaining backends moved");
        assert!(last.iter().all(|b| *b != Some(1)));
        assert!(kept_moved * 500 < before.len(), "{kept_moved}");
    }

    #[test]
    fn refusals_name_the_step_and_entry() {
        let mut s = spec();
        s.vips[1].members = vec![0, 0];
        assert_eq!(
            s.build(None, None).err(),
            Some(BuildError::Vip {
                index: 1,
                error: ConfigError::DuplicateMember(0)
            })
        );
        let mut s = spec();
        s.timeouts.udp_ns = 0;
        assert_eq!(
            s.build(None, None).err(),
            Some(BuildError::Timeouts(ConfigError::BadTimeout))
        );
        let mut s = spec();
        s.backends = vec![s.backends[0]; 257];
        assert_eq!(
            s.build(None, None).err(),
            Some(BuildError::Backends(ConfigError::TooManyBackends))
        );
    }
}
