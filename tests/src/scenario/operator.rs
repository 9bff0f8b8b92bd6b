//! Issue 16's scenario: an operator's changes under load through
//! `marllb-ctl` (drain, remove, add) and two controller restarts in between.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{equal_backends, wait_for, Bed, Clock};
use marllb_ctrl::api::ShowWhat;
use marllb_ctrl::ctl::{BackendCmd, Cli, Cmd};

use crate::lb::{BackendMetric, CtrlOptions, LbOptions, Method, PolicyKind};
use crate::load::{Capacities, LoadArgs, Record, Summary};

/// What the operator scenario measured.
#[derive(Debug, Clone)]
pub struct OperatorReport {
    /// The whole run.
    pub summary: Summary,
    /// Requests that failed, with their start times.
    pub failed_at: Vec<f64>,
    /// When be1 was drained (s from the load's start).
    pub drained_at: f64,
    /// When its last flow had finished (the metrics said 0 active).
    pub drain_done_at: Option<f64>,
    /// When `backend remove` answered.
    pub removed_at: Option<f64>,
    /// When `backend add` answered for the new backend.
    pub added_at: Option<f64>,
    /// The first controller restart (between drain and remove).
    pub restarted_at: f64,
    /// The second one (after the add).
    pub restarted_again_at: f64,
    /// Seconds from the request to `marllb-ctl`'s answer, per change.
    pub answer_s: Vec<f64>,
    /// New connections the drained backend got while drained (after one cycle).
    pub new_while_drained: usize,
    /// Connections to it that were open at the drain or the restart and then
    /// completed.
    pub spanning_drain_ok: usize,
    /// ... and failed.
    pub spanning_drain_failed: usize,
    /// Its admin state (metrics) right after the first controller restart.
    pub admin_after_restart: Option<f64>,
    /// Connections the removed backend got after its removal.
    pub new_after_remove: usize,
    /// Connections the added backend served.
    pub served_by_added: usize,
    /// Of the first 30 connections started after the add's answer, how many
    /// it got (SED gives a backend with no flows the next ones).
    pub added_of_next_30: usize,
    /// Seconds from the add's answer to the first connection it served.
    pub first_on_added_s: Option<f64>,
    /// The backends `show backends` listed after the second restart.
    pub backends_after_restart: Vec<String>,
    /// Connections the added backend got after the second restart.
    pub added_after_restart: usize,
}

/// Issue 16's scenario: under load, an operator drains a backend with
/// `marllb-ctl` (no new flows to it, its connections complete), restarts the
/// controller (the drain is kept from the state file), removes the drained
/// backend once its flows have finished, adds a new nginx backend (it takes
/// new flows at once), and restarts the controller again (the changed
/// backend set is kept).
pub fn operator(prefix: &str, dir: &Path) -> Result<OperatorReport> {
    let specs = equal_backends(3, 0.2, 8, 128);
    let socket = dir.join("ctl.sock");
    let mut bed = Bed::builder(prefix, dir)
        .backends(specs.clone())
        .dataplane(LbOptions {
            method: Method::Sed,
            ..LbOptions::default()
        })
        .controller(CtrlOptions {
            agent: PolicyKind::Sed,
            interval: Duration::from_millis(200),
            control_socket: Some(socket.clone()),
            state_file: Some(dir.join("ctrl-state.json")),
            // The configuration's backends, also after the add.
            servers: Some(specs.clone()),
            ..CtrlOptions::default()
        })
        .build()?;
    let added_spec = bed.topo.next_backend_spec(0.2, 8, 128);
    let ns = bed.ns(0);
    let ctl_bin = crate::lb::bin("marllb-ctl")?;
    // marllb-ctl's own command types (marllb_ctrl::ctl) spell the lines.
    let ctl = |json: bool, cmd: Cmd| -> Result<(f64, String)> {
        let args = Cli::to_socket(&socket, json, cmd).args();
        let t = Instant::now();
        let mut c = crate::netns::in_ns(&ns, &ctl_bin.to_string_lossy());
        c.args(&args);
        let out = crate::netns::run(&mut c)?;
        let took = t.elapsed().as_secs_f64();
        let line: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        println!("marllb-ctl {}: {}", line.join(" "), out.trim());
        Ok((took, out))
    };
    let backend = |op| Cmd::Backend { op };
    let show = |what| Cmd::Show { what };
    let mut all_specs = specs.clone();
    all_specs.push(added_spec.clone());
    let run = bed.start_load(&LoadArgs {
        rate: 30.0,
        loops: 2000000,
        hold: 1.5,
        timeout: 10,
        duration: 24.0,
        capacities: Capacities::of(&all_specs),
        ..LoadArgs::default()
    })?;
    let clock = Clock::start();
    let be1 = bed.topo.backends[1].spec.addr.to_string();
    let mut answer_s = Vec::new();

    clock.sleep_until(3.0);
    let drained_at = clock.now();
    answer_s.push(
        ctl(
            false,
            backend(BackendCmd::Drain {
                name: be1.clone(),
                force: false,
            }),
        )?
        .0,
    );
    clock.sleep_until(6.0);
    bed.restart_controller(0)?;
    let restarted_at = clock.now();
    // The first cycle's admin state of be1 (bounded wait for that cycle).
    let admin_of = || bed.backend_metric(0, BackendMetric::AdminState, &be1);
    wait_for(|| admin_of().is_some(), Duration::from_secs(3));
    let admin_after_restart = admin_of();
    ctl(false, show(ShowWhat::Backends))?;

    // Remove be1 once its flows have finished (bounded).
    let drain_done_at = wait_for(
        || bed.backend_metric(0, BackendMetric::ActiveFlows, &be1) == Some(0.0),
        Duration::from_secs(8),
    )
    .map(|_| clock.now());
    let removed_at = match drain_done_at {
        Some(_) => {
            answer_s.push(
                ctl(
                    false,
                    backend(BackendCmd::Remove {
                        name: be1.clone(),
                        force: false,
                    }),
                )?
                .0,
            );
            Some(clock.now())
        }
        None => None,
    };

    // A new nginx backend, started now, added with its MAC.
    clock.sleep_until(10.0);
    let j = bed.topo.add_backend(added_spec.clone())?;
    let (took, _) = ctl(
        false,
        backend(BackendCmd::Add {
            address: format!("{}:80", bed.topo.backends[j].spec.addr),
            mac: Some(bed.topo.backends[j].mac.clone()),
            weight: None,
            force: false,
        }),
    )?;
    answer_s.push(took);
    let added_at = Some(clock.now());
    ctl(false, show(ShowWhat::Backends))?;

    clock.sleep_until(15.0);
    bed.restart_controller(0)?;
    let restarted_again_at = clock.now();
    let (_, shown) = ctl(true, show(ShowWhat::Backends))?;
    let backends_after_restart: Vec<String> = serde_json::from_str::<serde_json::Value>(&shown)
        .ok()
        .and_then(|v| {
            v["data"].as_array().map(|rows| {
                rows.iter()
                    .filter_map(|r| r["address"].as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default();
    ctl(false, show(ShowWhat::Flows))?;

    let (summary, records) = run.finish(&mut bed.topo, Duration::from_secs(90))?;
    // One cycle (200 ms) plus the client's start-up after a change.
    let settle = 0.5;
    let on_be1 = || records.iter().filter(|r| r.served_by("be1"));
    let new_while_drained = on_be1().filter(|r| r.at > drained_at + settle).count();
    let spanning: Vec<&Record> = on_be1()
        .filter(|r| r.spans(drained_at) || r.spans(restarted_at))
        .collect();
    let spanning_drain_failed = spanning.iter().filter(|r| r.failed()).count();
    let new_after_remove = removed_at.map_or(0, |t| on_be1().filter(|r| r.at > t).count());
    let on_added: Vec<&Record> = records
        .iter()
        .filter(|r| r.served_by(&added_spec.id))
        .collect();
    // Of the first 30 connections started after the add's answer (about a
    // second, five cycles), those it got.
    let mut after_add: Vec<&Record> =
        added_at.map_or_else(Vec::new, |t| records.iter().filter(|r| r.at >= t).collect());
    after_add.sort_by(|a, b| a.at.total_cmp(&b.at));
    let added_of_next_30 = after_add
        .iter()
        .take(30)
        .filter(|r| r.served_by(&added_spec.id))
        .count();
    let first_on_added_s = added_at.and_then(|t| {
        on_added
            .iter()
            .map(|r| r.at - t)
            .filter(|d| *d >= -0.2)
            .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.min(d))))
    });
    let added_after_restart = on_added
        .iter()
        .filter(|r| r.at > restarted_again_at + settle)
        .count();
    let failed_at: Vec<f64> = records
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.at)
        .collect();
    let report = OperatorReport {
        summary,
        failed_at,
        drained_at,
        drain_done_at,
        removed_at,
        added_at,
        restarted_at,
        restarted_again_at,
        answer_s,
        new_while_drained,
        spanning_drain_ok: spanning.len() - spanning_drain_failed,
        spanning_drain_failed,
        admin_after_restart,
        new_after_remove,
        served_by_added: on_added.len(),
        added_of_next_30,
        first_on_added_s,
        backends_after_restart,
        added_after_restart,
    };
    println!("operator scenario: {report:?}");
    Ok(report)
}
