//! `marllb-ctl`: the operator's client of a running controller's runtime API
//! (its Unix socket; protocol in `marllb_ctrl::api`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use marllb_ctrl::api::{
    call, BackendRow, FlowRow, HealthRow, PolicyView, Request, Response, ShowWhat, VipRow,
};
use marllb_ctrl::config::default_control_socket;
use marllb_ctrl::ctl::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let req = match cli.cmd.request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marllb-ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(|| default_control_socket(&cli.shm));
    let r = match call(&socket, &req, Duration::from_secs(15)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marllb-ctl: {e} (is the controller running with this control_socket?)");
            return ExitCode::FAILURE;
        }
    };
    if cli.json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("marllb-ctl: {e}"),
        }
    } else if let Err(e) = print_human(&req, &r) {
        eprintln!("marllb-ctl: cannot read the answer: {e}");
        return ExitCode::FAILURE;
    }
    if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_human(req: &Request, r: &Response) -> Result<(), serde_json::Error> {
    if !r.ok {
        eprintln!(
            "refused: {}",
            r.error.as_deref().unwrap_or("(no reason given)")
        );
        return Ok(());
    }
    let data = r.data.clone().unwrap_or(serde_json::Value::Null);
    match req {
        Request::Show {
            what: ShowWhat::Backends,
        } => {
            let rows: Vec<BackendRow> = serde_json::from_value(data)?;
            println!(
                "{:>3} {:<40} {:<9} {:<8} {:<7} {:>8} {:>8} {:>6} {:>8} {:>8}",
                "IDX",
                "BACKEND",
                "ADMIN",
                "OPER",
                "HEALTH",
                "WEIGHT",
                "CAP",
                "BASE",
                "ACTIVE",
                "NEW"
            );
            for b in rows {
                println!(
                    "{:>3} {:<40} {:<9} {:<8} {:<7} {:>8.3} {:>8} {:>6.2} {:>8} {:>8}",
                    b.index,
                    b.address,
                    b.admin,
                    format!("{:?}", b.operator).to_lowercase(),
                    if b.healthy { "up" } else { "down" },
                    b.weight,
                    b.weight_cap.map_or("-".into(), |c| format!("{c:.3}")),
                    b.base_weight,
                    b.active_flows,
                    b.new_flows
                );
            }
        }
        Request::Show {
            what: ShowWhat::Vips,
        } => {
            let rows: Vec<VipRow> = serde_json::from_value(data)?;
            println!(
                "{:<40} {:>5} {:<5} {:>6} {:>5}",
                "VIP", "PORT", "PROTO", "METHOD", "ENCAP"
            );
            for v in rows {
                println!(
                    "{:<40} {:>5} {:<5} {:>6} {:>5}",
                    v.address, v.port, v.proto, v.method, v.encap
                );
            }
        }
        Request::Show {
            what: ShowWhat::Policy,
        } => {
            let p: PolicyView = serde_json::from_value(data)?;
            println!("agent:        {}", p.agent);
            println!("active:       {}", p.active);
            println!("model:        {}", p.model.as_deref().unwrap_or("-"));
            if let Some(n) = p.model_backends {
                println!("model serves: {n} backends");
            }
            println!("epoch:        {}", p.epoch);
            println!("cycles:       {}", p.cycles);
            println!("interval:     {} ms", p.interval_ms);
            println!(
                "state file:   {}",
                p.state_file.as_deref().unwrap_or("- (not persisted)")
            );
        }
        Request::Show {
            what: ShowWhat::Flows,
        } => {
            let rows: Vec<FlowRow> = serde_json::from_value(data)?;
            println!(
                "{:>3} {:<40} {:>8} {:>9} {:>8} {:>10} {:>9} {:>17} {:>17}",
                "IDX",
                "BACKEND",
                "ACTIVE",
                "HALF-OPEN",
                "NEW/CYC",
                "NEW",
                "SYN-TMO",
                "DURATION ms",
                "FCT ms"
            );
            let pair =
                |p: Option<(f64, f64)>| p.map_or("-".into(), |(m, q)| format!("{m:.1} / {q:.1}"));
            for f in rows {
                println!(
                    "{:>3} {:<40} {:>8} {:>9} {:>8} {:>10} {:>9} {:>17} {:>17}",
                    f.index,
                    f.address,
                    f.active,
                    f.half_open,
                    f.new_last_cycle,
                    f.new_total,
                    f.handshake_timeouts,
                    pair(f.duration_ms),
                    pair(f.fct_ms)
                );
            }
            println!("(mean / p95 of the last window; connections are listed by the data plane)");
        }
        Request::Show {
            what: ShowWhat::Health,
        } => {
            let rows: Vec<HealthRow> = serde_json::from_value(data)?;
            println!(
                "{:>3} {:<40} {:<6} {:<7} {:>10} {:>10}",
                "IDX", "BACKEND", "CHECK", "HEALTH", "CHECKS", "FAILED"
            );
            for h in rows {
                println!(
                    "{:>3} {:<40} {:<6} {:<7} {:>10} {:>10}",
                    h.index,
                    h.address,
                    if h.active_up { "up" } else { "down" },
                    if h.healthy { "up" } else { "down" },
                    h.checks_run,
                    h.checks_failed
                );
            }
        }
        _ => println!("{}", r.message.as_deref().unwrap_or("done")),
    }
    Ok(())
}
