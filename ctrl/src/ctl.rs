//! `marllb-ctl`'s command line, in one place: its grammar (clap), the
//! runtime-API request each command makes ([`Cmd::request`]), and the inverse,
//! a command's arguments ([`Cli::args`]), so a program that drives
//! `marllb-ctl` (the testbed) builds its commands from these types instead of
//! restating the grammar. A test checks that parsing [`Cli::args`] gives the
//! command back.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::{AdminOp, Request, ShowWhat};

/// `--shm`'s default.
pub const DEFAULT_REGION: &str = "marllb";

/// Changes and inspects a running MARLLB controller.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(name = "marllb-ctl", version, about)]
pub struct Cli {
    /// The controller's socket (default: /run/marllb/REGION.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Region name, to find the default socket.
    #[arg(long, global = true, default_value = DEFAULT_REGION)]
    pub shm: String,
    /// Print the controller's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// A command.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum Cmd {
    /// Shows backends (default), VIPs, flows, the policy or health.
    Show {
        /// What.
        #[arg(value_enum, default_value = "backends")]
        what: ShowWhat,
    },
    /// Changes one backend.
    Backend {
        /// How.
        #[command(subcommand)]
        op: BackendCmd,
    },
    /// Switches the policy.
    Policy {
        /// How.
        #[command(subcommand)]
        op: PolicyCmd,
    },
    /// Reloads the model.
    Model {
        /// How.
        #[command(subcommand)]
        op: ModelCmd,
    },
}

/// A change of one backend.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum BackendCmd {
    /// No new flows; established flows finish on it.
    Drain {
        /// Address or index.
        name: String,
        /// Even if no other backend would take new flows.
        #[arg(long)]
        force: bool,
    },
    /// Takes new flows again after a drain.
    Undrain {
        /// Address or index.
        name: String,
    },
    /// No new flows; established flows are re-placed.
    Down {
        /// Address or index.
        name: String,
        /// Even if no other backend would take new flows.
        #[arg(long)]
        force: bool,
    },
    /// Takes new flows again after a down.
    Up {
        /// Address or index.
        name: String,
    },
    /// Adds a backend: the data plane serves it without a restart (it joins
    /// every VIP; answered once the data plane applied it).
    Add {
        /// ADDR or ADDR:PORT ([V6]:PORT); the port is the health check's.
        address: String,
        /// MAC the data plane sends to (default: the one every backend shares).
        #[arg(long)]
        mac: Option<String>,
        /// Configured weight (default 1).
        #[arg(long)]
        weight: Option<f32>,
        /// Add it even if a health check of it fails now.
        #[arg(long)]
        force: bool,
    },
    /// Removes a backend (drain it first; its index is kept).
    Remove {
        /// Address or index.
        name: String,
        /// Even if it takes new flows or still has active ones (re-placed).
        #[arg(long)]
        force: bool,
    },
    /// Caps the backend's weight (the policy cannot exceed it); `none` clears.
    Weight {
        /// Address or index.
        name: String,
        /// Cap (1.0 = a configured weight of one), or `none`.
        weight: String,
    },
}

/// A policy change.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum PolicyCmd {
    /// Sets the agent (a learned one takes --model, default its current model).
    Set {
        /// Agent (sed, adaptive-sed, es, qmix, ...).
        agent: String,
        /// ONNX model for a learned agent.
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

/// A model operation.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum ModelCmd {
    /// Reloads the current model from its file.
    Reload,
}

impl Cmd {
    /// The runtime-API request it makes (a weight cap that is neither a
    /// number nor `none` is an error; a model path is made absolute, as the
    /// controller may run elsewhere).
    pub fn request(&self) -> Result<Request, String> {
        let backend = |op: AdminOp, name: &str, force: bool| Request::Backend {
            op,
            name: name.into(),
            force,
        };
        Ok(match self {
            Cmd::Show { what } => Request::Show { what: *what },
            Cmd::Backend { op } => match op {
                BackendCmd::Drain { name, force } => backend(AdminOp::Drain, name, *force),
                BackendCmd::Undrain { name } => backend(AdminOp::Undrain, name, false),
                BackendCmd::Down { name, force } => backend(AdminOp::Down, name, *force),
                BackendCmd::Up { name } => backend(AdminOp::Up, name, false),
                BackendCmd::Add {
                    address,
                    mac,
                    weight,
                    force,
                } => Request::Add {
                    address: address.clone(),
                    mac: mac.clone(),
                    weight: *weight,
                    force: *force,
                },
                BackendCmd::Remove { name, force } => Request::Remove {
                    name: name.clone(),
                    force: *force,
                },
                BackendCmd::Weight { name, weight } => Request::Weight {
                    name: name.clone(),
                    weight: match weight.as_str() {
                        "none" => None,
                        w => Some(
                            w.parse::<f32>()
                                .map_err(|_| format!("weight {w:?}: a number or `none`"))?,
                        ),
                    },
                },
            },
            Cmd::Policy {
                op: PolicyCmd::Set { agent, model },
            } => Request::Policy {
                agent: agent.clone(),
                model: model
                    .as_ref()
                    .map(|m| std::path::absolute(m).unwrap_or(m.clone())),
            },
            Cmd::Model {
                op: ModelCmd::Reload,
            } => Request::ModelReload,
        })
    }

    /// Its arguments on `marllb-ctl`'s command line (after the global flags).
    pub fn args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        let mut push = |s: &str| v.push(s.into());
        match self {
            Cmd::Show { what } => {
                push("show");
                if let Some(p) = what.to_possible_value() {
                    push(p.get_name());
                }
            }
            Cmd::Backend { op } => {
                push("backend");
                let (verb, name, force) = match op {
                    BackendCmd::Drain { name, force } => ("drain", name, *force),
                    BackendCmd::Undrain { name } => ("undrain", name, false),
                    BackendCmd::Down { name, force } => ("down", name, *force),
                    BackendCmd::Up { name } => ("up", name, false),
                    BackendCmd::Remove { name, force } => ("remove", name, *force),
                    BackendCmd::Add {
                        address,
                        mac,
                        weight,
                        force,
                    } => {
                        push("add");
                        push(address);
                        if let Some(m) = mac {
                            push("--mac");
                            push(m);
                        }
                        if let Some(w) = weight {
                            push("--weight");
                            push(&w.to_string());
                        }
                        if *force {
                            push("--force");
                        }
                        return v;
                    }
                    BackendCmd::Weight { name, weight } => {
                        push("weight");
                        push(name);
                        push(weight);
                        return v;
                    }
                };
                push(verb);
                push(name);
                if force {
                    push("--force");
                }
            }
            Cmd::Policy {
                op: PolicyCmd::Set { agent, model },
            } => {
                push("policy");
                push("set");
                push(agent);
                if let Some(m) = model {
                    v.push("--model".into());
                    v.push(m.clone().into_os_string());
                }
            }
            Cmd::Model {
                op: ModelCmd::Reload,
            } => {
                push("model");
                push("reload");
            }
        }
        v
    }
}

impl Cli {
    /// A command to the controller behind `socket`.
    pub fn to_socket(socket: impl Into<PathBuf>, json: bool, cmd: Cmd) -> Self {
        Self {
            socket: Some(socket.into()),
            shm: DEFAULT_REGION.into(),
            json,
            cmd,
        }
    }

    /// Its arguments on `marllb-ctl`'s command line (the program name not
    /// included): parsing them gives it back.
    pub fn args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        if let Some(s) = &self.socket {
            v.push("--socket".into());
            v.push(s.clone().into_os_string());
        }
        if self.shm != DEFAULT_REGION {
            v.push("--shm".into());
            v.push(self.shm.clone().into());
        }
        if self.json {
            v.push("--json".into());
        }
        v.extend(self.cmd.args());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_command() -> Vec<Cmd> {
        let b = |op| Cmd::Backend { op };
        let mut v: Vec<Cmd> = ShowWhat::value_variants()
            .iter()
            .map(|w| Cmd::Show { what: *w })
            .collect();
        for force in [false, true] {
            v.push(b(BackendCmd::Drain {
                name: "198.18.2.101".into(),
                force,
            }));
            v.push(b(BackendCmd::Down {
                name: "2".into(),
                force,
            }));
            v.push(b(BackendCmd::Remove {
                name: "198.18.2.101".into(),
                force,
            }));
            v.push(b(BackendCmd::Add {
                address: "198.18.2.108:80".into(),
                mac: force.then(|| "02:00:00:00:02:08".into()),
                weight: force.then_some(2.5),
                force,
            }));
        }
        v.push(b(BackendCmd::Undrain { name: "a".into() }));
        v.push(b(BackendCmd::Up { name: "a".into() }));
        v.push(b(BackendCmd::Weight {
            name: "a".into(),
            weight: "none".into(),
        }));
        v.push(b(BackendCmd::Weight {
            name: "a".into(),
            weight: "0.5".into(),
        }));
        v.push(Cmd::Policy {
            op: PolicyCmd::Set {
                agent: "es".into(),
                model: Some("/m/es.onnx".into()),
            },
        });
        v.push(Cmd::Policy {
            op: PolicyCmd::Set {
                agent: "sed".into(),
                model: None,
            },
        });
        v.push(Cmd::Model {
            op: ModelCmd::Reload,
        });
        v
    }

    #[test]
    fn parsing_the_arguments_gives_the_command_back() {
        for cmd in every_command() {
            for (socket, shm, json) in [
                (None, DEFAULT_REGION, false),
                (Some(PathBuf::from("/run/x.sock")), "lb1", true),
            ] {
                let cli = Cli {
                    socket: socket.clone(),
                    shm: shm.into(),
                    json,
                    cmd: cmd.clone(),
                };
                let mut argv: Vec<OsString> = vec!["marllb-ctl".into()];
                argv.extend(cli.args());
                let back = Cli::try_parse_from(&argv).expect("parses");
                assert_eq!(back, cli, "{argv:?}");
                assert!(cmd.request().is_ok(), "{cmd:?}");
            }
        }
    }

    #[test]
    fn a_bad_weight_cap_is_refused_by_name() {
        let e = Cmd::Backend {
            op: BackendCmd::Weight {
                name: "a".into(),
                weight: "half".into(),
            },
        }
        .request()
        .expect_err("not a number");
        assert!(e.contains("half"), "{e}");
    }
}
