//! The operator's configuration (what the CLI set) and the marllb-core
//! [`Service`] built from it.
//!
//! Every server serves every VIP; backend index = position in `set-servers`.
//! A `Service` is rebuilt from scratch on every change (CLI or controller
//! weights) and handed to the workers whole, so a worker never sees a
//! half-applied change. The CLI is a front end: it fills the [`ServiceSpec`]
//! both hosts build their service from (`marllb-host`).

use marllb_core::classify::{Vip, VipProto};
use marllb_core::flow::Timeouts;
use marllb_core::rewrite::{Egress, Encap};
use marllb_core::service::{AdminState, Backend, Service};
use marllb_core::Weight;
use marllb_host::{BuildError, ServiceSpec, ServiceVip, SetError};
use marllb_shm::layout::BackendEntry;

use crate::cli::{ConfSpec, EncapSpec, Proto, ServerSpec, VipSpec};

/// Default flow-hash seed (must be equal on every LB node of a deployment).
pub const DEFAULT_HASH_SEED: u64 = 0x6d61_726c_6c62_0001;

/// Default MTU of the server link.
pub const DEFAULT_MTU: u16 = 1500;

/// What the operator configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// VIPs in insertion order (VIP index = position).
    pub vips: Vec<VipSpec>,
    /// Servers (backend index = position).
    pub servers: Vec<ServerSpec>,
    /// Egress settings.
    pub egress: Egress,
    /// Flow-hash seed.
    pub hash_seed: u64,
    /// The controller's backend set (see `marllb_shm::backend_set`), once it
    /// added or removed a server: it replaces `servers` (whose indices it
    /// keeps) until the link ends.
    pub backend_set: Option<Vec<BackendEntry>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vips: Vec::new(),
            servers: Vec::new(),
            egress: Egress {
                mtu: DEFAULT_MTU,
                ..Egress::default()
            },
            hash_seed: DEFAULT_HASH_SEED,
            backend_set: None,
        }
    }
}

/// Controller decision to apply on top of the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// Weights by backend index (missing entries keep the configured weight).
    pub weights: Vec<Weight>,
    /// Admin states by backend index.
    pub admin: Vec<AdminState>,
}

fn same_vip(a: &VipSpec, b: &VipSpec) -> bool {
    a.addr == b.addr && a.proto == b.proto && a.port == b.port
}

impl Config {
    /// Adds `v`, or replaces the VIP with the same address, protocol and port.
    pub fn set_vip(&mut self, v: VipSpec) -> Result<(), String> {
        if let Some(old) = self.vips.iter_mut().find(|o| same_vip(o, &v)) {
            *old = v;
        } else {
            if self.vips.len() >= marllb_core::service::MAX_VIPS {
                return Err(format!(
                    "too many VIPs (at most {})",
                    marllb_core::service::MAX_VIPS
                ));
            }
            self.vips.push(v);
        }
        Ok(())
    }

    /// Removes the VIP with the address, protocol and port of `v`.
    pub fn del_vip(&mut self, v: &VipSpec) -> Result<(), String> {
        let n = self.vips.len();
        self.vips.retain(|o| !same_vip(o, v));
        if self.vips.len() == n {
            return Err(format!("no such VIP {}", v.addr));
        }
        Ok(())
    }

    /// Applies `lb rl conf`.
    pub fn apply_conf(&mut self, c: &ConfSpec) {
        if let Some(a) = c.src4 {
            self.egress.src_v4 = a.octets();
        }
        if let Some(a) = c.src6 {
            self.egress.src_v6 = a.octets();
        }
        if let Some(m) = c.mtu {
            self.egress.mtu = m;
        }
        if let Some(m) = c.mac {
            self.egress.src_mac = m;
        }
        if let Some(s) = c.hash_seed {
            self.hash_seed = s;
        }
    }

    /// Checks that every VIP's encapsulation can reach every server.
    pub fn validate(&self) -> Result<(), String> {
        for v in &self.vips {
            for s in &self.servers {
                match v.encap {
                    EncapSpec::Gre4 if !s.addr.is_ipv4() => {
                        return Err(format!(
                            "VIP {}: encap gre4 needs IPv4 servers, {} is IPv6",
                            v.addr, s.addr
                        ))
                    }
                    EncapSpec::Gre6 if !s.addr.is_ipv6() => {
                        return Err(format!(
                            "VIP {}: encap gre6 needs IPv6 servers, {} is IPv4",
                            v.addr, s.addr
                        ))
                    }
                    EncapSpec::L2Dsr if s.mac.is_none() => {
                        return Err(format!(
                        "VIP {}: encap l2dsr needs a MAC for server {} (set-servers {} mac <mac>)",
                        v.addr, s.addr, s.addr
                    ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// True when there is something to load-balance.
    pub fn is_complete(&self) -> bool {
        !self.vips.is_empty() && !self.servers.is_empty()
    }

    /// What the service is built from: every server serves every VIP.
    pub fn service_spec(&self) -> ServiceSpec {
        let backends: Vec<Backend> = self.servers.iter().map(backend_of).collect();
        let members: Vec<u16> = (0..backends.len() as u16).collect();
        ServiceSpec {
            hash_seed: self.hash_seed,
            // ip4-input has verified the header checksum already.
            verify_checksums: false,
            egress: self.egress,
            timeouts: Timeouts::default(),
            backends,
            vips: self
                .vips
                .iter()
                .map(|v| ServiceVip {
                    vip: vip_of(v),
                    method: v.method,
                    encap: encap_of(v.encap),
                    members: members.clone(),
                })
                .collect(),
        }
    }

    /// The servers by backend index, `None` for an index the controller
    /// removed (for `show`).
    pub fn server_addrs(&self) -> Vec<Option<std::net::IpAddr>> {
        match &self.backend_set {
            Some(set) => set
                .iter()
                .map(|e| e.ip().filter(|_| marllb_shm::backend_set::served(e)))
                .collect(),
            None => self.servers.iter().map(|s| Some(s.addr)).collect(),
        }
    }

    /// Builds the service: backends, then VIPs, then the controller's decision.
    pub fn build(&self, dynamic: Option<&Dynamic>) -> Result<Box<Service>, String> {
        self.validate()?;
        let weights = dynamic.map(|d| &d.weights[..]);
        let admin = dynamic.map(|d| &d.admin[..]);
        let spec = match &self.backend_set {
            None => self.service_spec(),
            Some(set) => self
                .service_spec()
                .with_backend_set(set)
                .map_err(|e| match e {
                    SetError::Family { index } => {
                        format!("backend set entry {index}: unknown family")
                    }
                    SetError::Build(e) => format!("backend set: {e}"),
                })?,
        };
        spec.build(weights, admin).map_err(|e| match e {
            BuildError::Alloc => "out of memory".to_string(),
            BuildError::Backends(e) => format!("servers: {e:?}"),
            BuildError::Vip { index, error } => match self.vips.get(index) {
                Some(v) => format!("VIP {}: {error:?}", v.addr),
                None => format!("VIP {index}: {error:?}"),
            },
            BuildError::Timeouts(e) => format!("timeouts: {e:?}"),
            BuildError::Admin { backend, error } => match self.servers.get(usize::from(backend)) {
                Some(s) => format!("server {}: {error:?}", s.addr),
                None => format!("server {backend}: {error:?}"),
            },
        })
    }
}

/// The core's backend for a server.
pub fn backend_of(s: &ServerSpec) -> Backend {
    marllb_host::backend(s.addr, s.mac.unwrap_or_default(), s.weight)
}

/// The core's VIP for a `set-vip`.
pub fn vip_of(v: &VipSpec) -> Vip {
    let proto = match v.proto {
        None => VipProto::Any,
        Some(Proto::Tcp) => VipProto::Tcp,
        Some(Proto::Udp) => VipProto::Udp,
    };
    marllb_host::addr::vip(v.addr, proto, v.port)
}

/// The core's encapsulation (the outer family is each server's own).
pub const fn encap_of(e: EncapSpec) -> Encap {
    match e {
        EncapSpec::Gre4 | EncapSpec::Gre6 => Encap::Gre,
        EncapSpec::IpIp => Encap::IpIp,
        EncapSpec::L2Dsr => Encap::L2Dsr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse_lb, Command};
    use marllb_core::WEIGHT_ONE;
    use std::net::IpAddr;

    fn apply(c: &mut Config, line: &str) -> Result<(), String> {
        match parse_lb(line).map_err(|e| e.0)? {
            Command::SetVip(v) => c.set_vip(v),
            Command::DelVip(v) => c.del_vip(&v),
            Command::SetServers { servers } => {
                c.servers = servers;
                Ok(())
            }
            Command::Conf(x) => {
                c.apply_conf(&x);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    #[test]
    fn builds_service() {
        let mut c = Config::default();
        apply(&mut c, "set-vip 10.0.0.1 protocol tcp port 80").unwrap();
        apply(&mut c, "set-vip 2001:db8::1 encap ipip").unwrap();
        apply(&mut c, "set-servers 10.1.0.1 10.1.0.2 weight 2").unwrap();
        let svc = c.build(None).unwrap();
        assert_eq!(svc.backends().len(), 2);
        assert!(svc.backends().iter().all(|b| b.weight == 2 * WEIGHT_ONE));
        // Each server its own configured weight.
        let mut d = c.clone();
        apply(&mut d, "set-servers 10.1.0.1 weight 0.5 10.1.0.2 weight 3").unwrap();
        let per: Vec<_> = d
            .build(None)
            .unwrap()
            .backends()
            .iter()
            .map(|b| (b.weight, b.base_weight))
            .collect();
        assert_eq!(
            per,
            [
                (WEIGHT_ONE / 2, WEIGHT_ONE / 2),
                (3 * WEIGHT_ONE, 3 * WEIGHT_ONE)
            ]
        );
        assert_eq!(svc.vip_list().len(), 2);
        assert!(svc.vip_services().iter().all(|v| v.live));
        // Replacing the same VIP keeps one entry.
        apply(&mut c, "set-vip 10.0.0.1 protocol tcp port 80 encap ipip").unwrap();
        assert_eq!(c.vips.len(), 2);
        apply(&mut c, "set-vip 10.0.0.1 protocol tcp port 80 del").unwrap();
        assert_eq!(c.vips.len(), 1);
        assert_eq!(c.del_vip(&VIP0).unwrap_err(), "no such VIP 1.1.1.1");
    }

    const VIP0: VipSpec = VipSpec {
        addr: IpAddr::V4(std::net::Ipv4Addr::new(1, 1, 1, 1)),
        proto: None,
        port: 0,
        encap: EncapSpec::Gre4,
        method: marllb_core::select::Method::Alias,
    };

    #[test]
    fn encap_family_checks() {
        let mut c = Config::default();
        apply(&mut c, "set-vip 10.0.0.1").unwrap(); // gre4
        apply(&mut c, "set-servers 2001:db8::5").unwrap();
        assert!(c.build(None).unwrap_err().contains("gre4 needs IPv4"));
        apply(&mut c, "set-vip 10.0.0.1 encap l2dsr").unwrap();
        assert!(c.build(None).unwrap_err().contains("needs a MAC"));
        apply(&mut c, "set-servers 2001:db8::5 mac 02:00:00:00:00:05").unwrap();
        assert!(c.build(None).is_ok());
    }

    #[test]
    fn dynamic_weights_and_admin() {
        let mut c = Config::default();
        apply(&mut c, "set-vip 10.0.0.1 method alias").unwrap();
        apply(&mut c, "set-servers 10.1.0.1 10.1.0.2").unwrap();
        let d = Dynamic {
            weights: vec![0, 3 * marllb_core::WEIGHT_ONE],
            admin: vec![AdminState::Active, AdminState::Active],
        };
        let svc = c.build(Some(&d)).unwrap();
        assert_eq!(
            svc.vip(0).unwrap().weights(),
            &[0, 3 * marllb_core::WEIGHT_ONE]
        );
        let d = Dynamic {
            weights: vec![],
            admin: vec![AdminState::Down, AdminState::Active],
        };
        let svc = c.build(Some(&d)).unwrap();
        assert_eq!(svc.backend(0).unwrap().admin, AdminState::Down);
    }
}
