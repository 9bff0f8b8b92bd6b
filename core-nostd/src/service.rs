//! The service configuration a worker serves: backends, VIPs and the selection
//! tables built from them. Read-only on the packet path and shared by all workers
//! of a host (hosts rebuild a copy and swap it, or update it between batches).
//!
//! # Weights
//!
//! Each backend has a *dynamic* weight (set by the controller every cycle) and a
//! *base* weight (from the configuration), plus an admin state.
//!
//! * New flows are placed by the VIP's method (alias or SED) using the dynamic
//!   weight of backends that are `Active`; `Draining` and `Down` backends, and
//!   weight 0, get no new flows while their existing flows continue.
//! * The consistent Maglev table (mid-flow packets without state, flows that did
//!   not fit in the flow table, and the stateless Maglev method) is built from the
//!   *base* weights of backends that are not `Down`. It changes only when the
//!   backend set or an admin state changes, never with the controller's per-cycle
//!   weights, so every LB node, whatever its agent decided, maps an unknown
//!   connection to the same backend, and a drained backend keeps its connections.
//! * Flows on a backend that goes `Down` are re-placed on their next packet (the
//!   backend is gone; the client gets a fast RST from the new one instead of a
//!   hang), counted in `GlobalCounters::flows_rescheduled`.

use zerocopy::{FromZeros, Immutable, IntoBytes};

use crate::classify::Vip;
use crate::flow::{Timeouts, FLOW_STATES};
use crate::hash::backend_id;
use crate::rewrite::{Egress, Encap, Target, TunnelV4};
use crate::select::{AliasTable, MaglevTable, Method};
use crate::wire::IpFamily;
use crate::{Weight, MAX_BACKENDS};

/// Largest number of VIPs one service can hold.
pub const MAX_VIPS: usize = 16;

// The flow table keeps VIP indices in 7 bits.
static_assertions::const_assert!(MAX_VIPS <= 127);

/// Operator / controller state of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, FromZeros, IntoBytes, Immutable)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum AdminState {
    /// Takes new flows according to its weight.
    #[default]
    Active = 0,
    /// No new flows; existing flows continue.
    Draining = 1,
    /// Failed or removed: no new flows, removed from the consistent table,
    /// existing flows are re-placed.
    Down = 2,
}

/// One backend server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, FromZeros)]
#[repr(C)]
pub struct Backend {
    /// Address family of `addr` (the outer destination for tunnels).
    pub family: IpFamily,
    /// Admin state.
    pub admin: AdminState,
    /// MAC address of the backend or of the next hop toward it.
    pub mac: [u8; 6],
    /// Address (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    /// Dynamic weight (controller), Q16.16.
    pub weight: Weight,
    /// Base weight (configuration), Q16.16; used by the consistent table.
    pub base_weight: Weight,
}

/// Why a configuration change was refused. The service is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// More than [`MAX_BACKENDS`] backends.
    TooManyBackends,
    /// More than [`MAX_VIPS`] VIPs.
    TooManyVips,
    /// A backend index is out of range.
    BadBackendIndex(u16),
    /// A VIP has no backends.
    NoMembers,
    /// A backend is listed twice in one VIP.
    DuplicateMember(u16),
    /// The same VIP (address, protocol, port) is configured twice.
    DuplicateVip,
    /// Every backend of a VIP has base weight 0 or is down.
    AllZeroWeights,
    /// A timeout is zero or longer than the flow clock allows.
    BadTimeout,
}

/// Per-VIP state: members and selection tables.
#[derive(FromZeros)]
#[repr(C)]
pub struct VipService {
    /// The VIP.
    pub vip: Vip,
    /// How new flows are placed.
    pub method: Method,
    /// How packets reach the backend.
    pub encap: Encap,
    /// True when at least one member can take new flows.
    pub live: bool,
    /// True when the consistent table has at least one entry.
    pub consistent: bool,
    n_members: u16,
    members: [u16; MAX_BACKENDS],
    weights: [Weight; MAX_BACKENDS],
    alias: AliasTable,
    maglev: MaglevTable,
}

impl core::fmt::Debug for VipService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VipService")
            .field("vip", &self.vip)
            .field("method", &self.method)
            .field("encap", &self.encap)
            .field("members", &self.members())
            .finish_non_exhaustive()
    }
}

impl VipService {
    /// Global backend indices of the members.
    pub fn members(&self) -> &[u16] {
        &self.members[..usize::from(self.n_members).min(MAX_BACKENDS)]
    }

    /// Effective new-flow weights of the members (0 for draining/down).
    pub fn weights(&self) -> &[Weight] {
        &self.weights[..usize::from(self.n_members).min(MAX_BACKENDS)]
    }

    /// Backend chosen by the consistent (Maglev) table for `hash`.
    #[inline]
    pub fn consistent(&self, hash: u64) -> Option<u16> {
        if !self.consistent {
            return None;
        }
        let m = self.maglev.lookup(hash)?;
        self.members.get(usize::from(m)).copied()
    }

    /// Backend drawn from the alias table with `hash`.
    #[inline]
    pub fn alias(&self, hash: u64) -> Option<u16> {
        if !self.live {
            return None;
        }
        let m = self.alias.sample(hash)?;
        self.members.get(usize::from(m)).copied()
    }

    /// The alias table (for inspection and tests).
    pub fn alias_table(&self) -> &AliasTable {
        &self.alias
    }

    /// The Maglev table (for inspection and tests).
    pub fn maglev_table(&self) -> &MaglevTable {
        &self.maglev
    }
}

/// Everything a worker needs to know about the service it load-balances.
///
/// All-zero bytes are an empty, valid service; hosts allocate it zeroed
/// (`Service::new_box_zeroed()`; it is about 2.3 MB) and then configure it.
#[derive(FromZeros)]
#[repr(C)]
pub struct Service {
    n_backends: u16,
    n_vips: u8,
    /// Verify IPv4 header checksums (off when the NIC does it).
    pub verify_checksums: bool,
    /// Seed of the flow hash; equal on every LB node of a deployment.
    pub hash_seed: u64,
    /// Our side of the backend link (set with [`Service::set_egress`]: the
    /// tunnel headers below are built from it).
    egress: Egress,
    timeouts: [u32; FLOW_STATES],
    vip_list: [Vip; MAX_VIPS],
    backends: [Backend; MAX_BACKENDS],
    /// Each backend's IPv4 tunnel headers and fast-path flags, rebuilt
    /// whenever `egress` or the backends change (a slot past the last
    /// backend is zero: not up).
    tunnels: [TunnelV4; MAX_BACKENDS],
    vips: [VipService; MAX_VIPS],
}

impl core::fmt::Debug for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("backends", &self.backends())
            .field("vips", &self.vip_services())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Backends, by global index.
    pub fn backends(&self) -> &[Backend] {
        &self.backends[..usize::from(self.n_backends).min(MAX_BACKENDS)]
    }

    /// VIP addresses, by VIP index (what the classifier matches against).
    pub fn vip_list(&self) -> &[Vip] {
        &self.vip_list[..usize::from(self.n_vips).min(MAX_VIPS)]
    }

    /// Per-VIP services, by VIP index.
    pub fn vip_services(&self) -> &[VipService] {
        &self.vips[..usize::from(self.n_vips).min(MAX_VIPS)]
    }

    /// VIP service `i`.
    #[inline]
    pub fn vip(&self, i: u8) -> Option<&VipService> {
        self.vip_services().get(usize::from(i))
    }

    /// Backend `i`.
    #[inline]
    pub fn backend(&self, i: u16) -> Option<&Backend> {
        self.backends().get(usize::from(i))
    }

    /// Backend `i` and its IPv4 tunnel headers (one bounds check for both).
    #[inline(always)]
    pub(crate) fn backend_tunnel(&self, i: u16) -> Option<(&Backend, &TunnelV4)> {
        let i = usize::from(i);
        (i < usize::from(self.n_backends).min(MAX_BACKENDS))
            .then(|| (&self.backends[i], &self.tunnels[i]))
    }

    /// Our side of the backend link.
    #[inline]
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Sets our side of the backend link (and rebuilds the backends' tunnel
    /// headers from it).
    pub fn set_egress(&mut self, egress: Egress) {
        self.egress = egress;
        self.rebuild_tunnels();
    }

    fn rebuild_tunnels(&mut self) {
        let n = usize::from(self.n_backends).min(MAX_BACKENDS);
        for (i, t) in self.tunnels.iter_mut().enumerate() {
            let Some(b) = self.backends[..n].get(i) else {
                t.zero();
                continue;
            };
            let dst = [b.addr[0], b.addr[1], b.addr[2], b.addr[3]];
            *t = TunnelV4::new(&self.egress, &b.mac, dst);
            t.up = b.admin != AdminState::Down;
            t.v4 = b.family == IpFamily::V4;
        }
    }

    /// The IPv4 tunnel headers of backend `i` when it is up (a backend of
    /// the service, not down), for the fast path: one load and test, and no
    /// bounds check for an index from a flow-table entry (below 256).
    #[inline(always)]
    pub(crate) fn tunnel_up(&self, i: u16) -> Option<&TunnelV4> {
        self.tunnels.get(usize::from(i)).filter(|t| t.up)
    }

    /// Flow-table timeouts in ticks.
    #[inline]
    pub fn timeouts(&self) -> &[u32; FLOW_STATES] {
        &self.timeouts
    }

    /// Sets the flow timeouts; each must be non-zero and at most
    /// [`crate::flow::MAX_TIMEOUT_NS`].
    pub fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), ConfigError> {
        for ns in [
            t.tcp_syn_ns,
            t.tcp_established_ns,
            t.tcp_closing_ns,
            t.udp_ns,
            t.other_ns,
        ] {
            if ns == 0 || ns > crate::flow::MAX_TIMEOUT_NS {
                return Err(ConfigError::BadTimeout);
            }
        }
        self.timeouts = t.to_ticks();
        Ok(())
    }

    /// Replaces the backend list (and rebuilds every VIP's tables). Fails without
    /// change if a VIP refers to a backend that would no longer exist.
    pub fn set_backends(&mut self, backends: &[Backend]) -> Result<(), ConfigError> {
        if backends.len() > MAX_BACKENDS {
            return Err(ConfigError::TooManyBackends);
        }
        for v in self.vip_services() {
            if let Some(&m) = v
                .members()
                .iter()
                .find(|&&m| usize::from(m) >= backends.len())
            {
                return Err(ConfigError::BadBackendIndex(m));
            }
        }
        self.backends[..backends.len()].copy_from_slice(backends);
        self.n_backends = backends.len() as u16;
        self.rebuild_tunnels();
        if self.timeouts == [0; FLOW_STATES] {
            self.timeouts = Timeouts::default().to_ticks();
        }
        self.rebuild_all(true);
        Ok(())
    }

    /// Adds a VIP served by `members` (global backend indices); returns its index.
    pub fn add_vip(
        &mut self,
        vip: Vip,
        method: Method,
        encap: Encap,
        members: &[u16],
    ) -> Result<u8, ConfigError> {
        let i = usize::from(self.n_vips);
        if i >= MAX_VIPS {
            return Err(ConfigError::TooManyVips);
        }
        if members.is_empty() {
            return Err(ConfigError::NoMembers);
        }
        if members.len() > MAX_BACKENDS {
            return Err(ConfigError::TooManyBackends);
        }
        if self.vip_list().contains(&vip) {
            return Err(ConfigError::DuplicateVip);
        }
        for (k, &m) in members.iter().enumerate() {
            if m >= self.n_backends {
                return Err(ConfigError::BadBackendIndex(m));
            }
            if members[..k].contains(&m) {
                return Err(ConfigError::DuplicateMember(m));
            }
        }
        let base_ok = members.iter().any(|&m| {
            let b = &self.backends[usize::from(m)];
            b.admin != AdminState::Down && b.base_weight > 0
        });
        if !base_ok {
            return Err(ConfigError::AllZeroWeights);
        }
        let v = &mut self.vips[i];
        v.vip = vip;
        v.method = method;
        v.encap = encap;
        v.n_members = members.len() as u16;
        v.members[..members.len()].copy_from_slice(members);
        self.vip_list[i] = vip;
        self.n_vips += 1;
        Self::rebuild(&self.backends, &mut self.vips[i], true, self.hash_seed);
        Ok(i as u8)
    }

    /// Applies the controller's dynamic weights (by global backend index; missing
    /// entries keep their value) and rebuilds the new-flow tables. Existing flows
    /// never move. Returns the number of VIPs left with no live backend.
    pub fn set_weights(&mut self, weights: &[Weight]) -> usize {
        for (b, w) in self.backends.iter_mut().zip(weights) {
            b.weight = *w;
        }
        self.rebuild_all(false);
        self.vip_services().iter().filter(|v| !v.live).count()
    }

    /// Sets a backend's admin state; rebuilds the consistent tables when the set
    /// of active backends changes.
    pub fn set_admin(&mut self, backend: u16, state: AdminState) -> Result<(), ConfigError> {
        let Some(b) = self.backends[..usize::from(self.n_backends)].get_mut(usize::from(backend))
        else {
            return Err(ConfigError::BadBackendIndex(backend));
        };
        let was_active = b.admin == AdminState::Active;
        b.admin = state;
        if let Some(t) = self.tunnels.get_mut(usize::from(backend)) {
            t.up = state != AdminState::Down;
        }
        let maglev = was_active != (state == AdminState::Active);
        self.rebuild_all(maglev);
        Ok(())
    }

    fn rebuild_all(&mut self, maglev: bool) {
        let n = usize::from(self.n_vips).min(MAX_VIPS);
        for v in self.vips[..n].iter_mut() {
            Self::rebuild(&self.backends, v, maglev, self.hash_seed);
        }
    }

    fn rebuild(backends: &[Backend; MAX_BACKENDS], v: &mut VipService, maglev: bool, seed: u64) {
        let n = usize::from(v.n_members).min(MAX_BACKENDS);
        for k in 0..n {
            let b = &backends[usize::from(v.members[k])];
            v.weights[k] = if b.admin == AdminState::Active {
                b.weight
            } else {
                0
            };
        }
        // A failed build (all zero) leaves the old table in place; `live` says
        // whether it may be used.
        v.live = v.alias.build(&v.weights[..n]).is_ok();
        if maglev {
            let mut ids = [(0u64, 0u32); MAX_BACKENDS];
            for k in 0..n {
                let b = &backends[usize::from(v.members[k])];
                let w = if b.admin == AdminState::Active {
                    b.base_weight
                } else {
                    0
                };
                ids[k] = (backend_id(&b.addr, seed), w);
            }
            v.consistent = v
                .maglev
                .build_with_size(&ids[..n], crate::select::MAGLEV_SIZE as u32)
                .is_ok();
        }
    }

    /// Rewrite target of backend `b` for a VIP using `encap`.
    #[inline]
    pub fn target(&self, b: u16, encap: Encap) -> Option<Target> {
        let be = self.backend(b)?;
        Some(Target {
            encap,
            dst_mac: be.mac,
            family: be.family,
            addr: be.addr,
        })
    }
}
