//! Simulator checks: determinism, closed forms, rejections, baselines.

use marllb_policy::PolicyKind;
use marllb_sim::eval::{evaluate, Policy};
use marllb_sim::workload::SizeDist;
use marllb_sim::{parse_servers, ServerSpec, Sim, SimConfig, Workload, BASELINES};

fn cfg(servers: Vec<ServerSpec>, lbs: usize, duration: f64, seed: u64) -> SimConfig {
    SimConfig {
        servers,
        lbs,
        step_s: 0.25,
        duration,
        drain: true,
        warmup: 0.0,
        features: true,
        seed,
        conditions: Default::default(),
    }
}

fn poisson(rate: f64, mean: f64) -> Workload {
    Workload::Poisson {
        rate,
        size: SizeDist::Exp { mean },
    }
}

#[test]
fn same_seed_same_results_other_seed_differs() {
    let servers = parse_servers("4x2,3x4").expect("servers");
    let w = poisson(190.0, 0.0874);
    for m in BASELINES {
        let a = Sim::new(cfg(servers.clone(), 2, 20.0, 7), &w, m).run();
        let b = Sim::new(cfg(servers.clone(), 2, 20.0, 7), &w, m).run();
        assert_eq!(a.jct, b.jct, "{m:?}");
        assert_eq!(a.per_server, b.per_server);
        let c = Sim::new(cfg(servers.clone(), 2, 20.0, 8), &w, m).run();
        assert_ne!(a.jct, c.jct);
    }
}

#[test]
fn mm1_processor_sharing_mean_response_time() {
    // M/M/1-PS with rho = 0.5: E[T] = E[S] / (1 - rho) = 0.2 s. Workers and
    // backlog large enough never to bind.
    let spec = ServerSpec {
        speed: 1.0,
        cpus: 1.0,
        workers: 10_000,
        backlog: 0,
        model: marllb_sim::ServerModel::Cores,
    };
    let w = poisson(5.0, 0.1);
    let s = Sim::new(cfg(vec![spec], 1, 20_000.0, 3), &w, PolicyKind::Ecmp).run();
    let mean = s.jct.iter().sum::<f64>() / s.jct.len() as f64;
    assert!((mean - 0.2).abs() < 0.01, "mean response time {mean}");
    // Utilization = rho.
    assert!((s.utilization[0] - 0.5).abs() < 0.02, "{:?}", s.utilization);
    assert_eq!(s.rejected, 0);
}

#[test]
fn ps_with_two_cpus_and_slowdown_is_size_proportional() {
    // M/M/2 processor sharing (rate min(1, 2/n) per job): E[T] = E[S] / (1 - rho^2)
    // (the M/M/2 mean number in system divided by lambda). rho = 0.6.
    let spec = ServerSpec {
        speed: 1.0,
        cpus: 2.0,
        workers: 10_000,
        backlog: 0,
        model: marllb_sim::ServerModel::Cores,
    };
    let w = poisson(12.0, 0.1);
    let s = Sim::new(cfg(vec![spec], 1, 10_000.0, 4), &w, PolicyKind::Ecmp).run();
    let mean = s.jct.iter().sum::<f64>() / s.jct.len() as f64;
    let expect = 0.1 / (1.0 - 0.36);
    assert!(
        (mean - expect).abs() / expect < 0.05,
        "mean {mean} expected {expect}"
    );
}

#[test]
fn full_backlog_rejects() {
    // Offered load 3x capacity on one 1-CPU server with 32 workers and backlog 128:
    // the system fills up to 160 and refuses about two thirds of the flows.
    let w = poisson(30.0, 0.1);
    let s = Sim::new(
        cfg(vec![ServerSpec::apache(1.0)], 1, 300.0, 5),
        &w,
        PolicyKind::Ecmp,
    )
    .run();
    let frac = s.rejected as f64 / s.arrived as f64;
    assert!((0.6..0.72).contains(&frac), "rejected fraction {frac}");
    // Nobody waits longer than the full system drains: <= 160 jobs of work.
    assert!(s.utilization[0] > 0.9);
}

#[test]
fn sed_beats_ecmp_and_oracle_is_best_on_heterogeneous_servers() {
    let servers = parse_servers("4x2,3x4").expect("servers");
    let w = poisson(195.0, 0.0874);
    let c = SimConfig {
        features: false,
        warmup: 5.0,
        ..cfg(servers, 2, 120.0, 11)
    };
    let run = |m| evaluate(c.clone(), &w, &Policy::Baseline(m)).expect("eval");
    let ecmp = run(PolicyKind::Ecmp);
    let wcmp = run(PolicyKind::Wcmp);
    let sed = run(PolicyKind::Sed);
    let lsq = run(PolicyKind::Lsq);
    let oracle = run(PolicyKind::Oracle);
    assert!(
        sed.jct_p90_ms < 0.7 * ecmp.jct_p90_ms,
        "sed {} ecmp {}",
        sed.jct_p90_ms,
        ecmp.jct_p90_ms
    );
    assert!(wcmp.jct_p90_ms < ecmp.jct_p90_ms);
    assert!(sed.jct_p90_ms <= lsq.jct_p90_ms * 1.05);
    assert!(
        oracle.jct_p90_ms <= sed.jct_p90_ms * 1.02,
        "oracle {} sed {}",
        oracle.jct_p90_ms,
        sed.jct_p90_ms
    );
    assert!(sed.jain > ecmp.jain);
}

#[test]
fn ecmp_splits_flows_evenly_over_nodes() {
    let servers = parse_servers("2x2").expect("servers");
    let w = poisson(20.0, 0.05);
    let mut sim = Sim::new(cfg(servers, 4, 200.0, 2), &w, PolicyKind::Ecmp);
    while sim.run_step() {}
    let placed: Vec<u64> = sim.lbs.iter().map(|n| n.placed).collect();
    let total: u64 = placed.iter().sum();
    for p in &placed {
        let share = *p as f64 / total as f64;
        assert!((share - 0.25).abs() < 0.02, "{placed:?}");
    }
}

#[test]
fn features_come_from_core_telemetry() {
    let servers = parse_servers("4x2,3x4").expect("servers");
    let w = poisson(195.0, 0.0874);
    let mut sim = Sim::new(cfg(servers, 2, 10.0, 9), &w, PolicyKind::Es);
    for _ in 0..20 {
        sim.run_step();
    }
    // Active-flow gauges of both nodes add up to the jobs at the servers.
    let n = sim.servers.len();
    for b in 0..n {
        let gauge: u32 = sim.lbs.iter().map(|l| l.telemetry.active(b as u16)).sum();
        assert_eq!(gauge as usize, sim.servers[b].in_system());
    }
    let f = sim.lbs[0]
        .features
        .raw(0, marllb_policy::Feature::FlowDurationMean);
    assert!(f > 0.0 && f < 5.0, "{f}");
    assert!(sim.last_reward > 0.0 && sim.last_reward <= 1.0);
}

#[test]
fn adaptive_sed_with_explicit_constants_is_adaptive_sed_and_bad_keys_are_refused() {
    let servers = parse_servers("4x2@0.5,3x4").expect("servers");
    let w = poisson(195.0, 0.0874);
    let c = cfg(servers, 2, 40.0, 5);
    let run = |p: &str| evaluate(c.clone(), &w, &Policy::parse(p).expect(p)).expect("eval");
    let base = run("adaptive-sed");
    let same = run("adaptive-sed:gain=0.5,rate=0.1");
    assert_eq!(
        base.jct_sorted_ms, same.jct_sorted_ms,
        "defaults spelled out"
    );
    let other = run("adaptive-sed:gain=1.5,rate=0.5");
    assert_ne!(
        base.jct_sorted_ms, other.jct_sorted_ms,
        "the constants are used"
    );
    assert_eq!(other.policy, "adaptive-sed:gain=1.5,rate=0.5");
    for bad in [
        "adaptive-sed:speed=1",
        "adaptive-sed:gain",
        "adaptive-sed:gain=x",
        "adaptive-sed:rate=2",
        "adaptive-sed:gain=-1",
    ] {
        let e = Policy::parse(bad).expect_err(bad).to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn lingering_flows_fill_the_gauges_not_the_servers() {
    // With every flow lingering about 5 s after its response, an LB node's
    // gauges count far more flows than the servers hold; ECMP (which never
    // reads them) places every flow where it did without linger, so the
    // completion times are the same to the bit; SED, which reads them, does
    // not; and the draws are the same for every policy (common random numbers).
    let servers = parse_servers("4x2@0.5,3x4").expect("servers");
    let w = poisson(60.0, 0.0874);
    let linger = marllb_sim::Linger {
        share: 1.0,
        mean_s: 5.0,
    };
    let with = |c: SimConfig| SimConfig {
        conditions: marllb_sim::Conditions {
            linger: Some(linger),
            ..Default::default()
        },
        ..c
    };
    let plain = Sim::new(cfg(servers.clone(), 1, 30.0, 5), &w, PolicyKind::Ecmp).run();
    let idle = Sim::new(with(cfg(servers.clone(), 1, 30.0, 5)), &w, PolicyKind::Ecmp).run();
    assert_eq!(plain.jct, idle.jct);
    assert_eq!(plain.per_server, idle.per_server);
    assert!(idle.events > plain.events, "the closes are events too");

    let mut sim = Sim::new(with(cfg(servers.clone(), 1, 30.0, 5)), &w, PolicyKind::Sed);
    let mut seen_more = false;
    while sim.run_step() {
        if sim.now > 10.0 && sim.now < 30.0 {
            let gauges: u32 = (0..servers.len() as u16)
                .map(|b| sim.lbs[0].telemetry.active(b))
                .sum();
            let held: usize = sim.servers.iter().map(|s| s.in_system()).sum();
            // About 60/s × 5 s = 300 idle flows beside a few running ones.
            seen_more |= gauges as usize > held + 150;
        }
    }
    assert!(seen_more, "lingering flows are counted as active");
    let sed_plain = Sim::new(cfg(servers.clone(), 1, 30.0, 5), &w, PolicyKind::Sed).run();
    let sed_idle = sim.into_stats();
    assert_ne!(sed_plain.jct, sed_idle.jct);

    // Same seed and arrival, same draw; about `share` of the flows linger,
    // with the stated mean.
    let l = marllb_sim::Linger {
        share: 0.3,
        mean_s: 2.0,
    };
    assert_eq!(l.idle_s(9, 1.25), l.idle_s(9, 1.25));
    let draws: Vec<f64> = (0..20_000)
        .map(|i| l.idle_s(9, f64::from(i) * 0.01))
        .collect();
    let lingering: Vec<f64> = draws.iter().copied().filter(|x| *x > 0.0).collect();
    let share = lingering.len() as f64 / draws.len() as f64;
    let mean = lingering.iter().sum::<f64>() / lingering.len() as f64;
    assert!((share - 0.3).abs() < 0.02, "share {share}");
    assert!((mean - 2.0).abs() < 0.1, "mean {mean}");
}

#[test]
fn with_edge_packets_the_node_sees_a_flow_only_at_its_request_and_its_response() {
    // `Packets::Edges`: two packets per flow (the request at the arrival, the
    // response and FIN at the completion) and none while a server works, so a
    // step with flows running but none starting or ending has no age sample;
    // with `Stream` every running flow sends one each step. ECMP does not read
    // them, so its completion times are the same either way.
    let servers = parse_servers("1x4").expect("servers");
    let w = poisson(1.0, 2.0);
    let with = |p: marllb_sim::Packets| SimConfig {
        conditions: marllb_sim::Conditions {
            packets: p,
            ..Default::default()
        },
        ..cfg(servers.clone(), 1, 60.0, 7)
    };
    let stream = Sim::new(with(marllb_sim::Packets::Stream), &w, PolicyKind::Ecmp).run();
    let edges = Sim::new(with(marllb_sim::Packets::Edges), &w, PolicyKind::Ecmp).run();
    assert_eq!(stream.jct, edges.jct);

    // (packets seen, flows accepted, steps with a flow running and no age sample)
    let run = |p: marllb_sim::Packets| {
        let mut sim = Sim::new(with(p), &w, PolicyKind::Sed);
        let mut unseen = 0;
        while sim.run_step() {
            let running = sim.servers[0].in_system() > 0;
            let age = sim.lbs[0]
                .features
                .raw(0, marllb_policy::Feature::FlowDurationMean);
            if running && age == 0.0 {
                unseen += 1;
            }
        }
        let node = &sim.lbs[0];
        (
            node.telemetry.backends[0].packets,
            node.placed - node.rejected,
            unseen,
        )
    };
    let (packets, flows, unseen) = run(marllb_sim::Packets::Edges);
    assert!(flows > 40, "{flows} flows");
    assert_eq!(packets, 2 * flows);
    assert!(unseen > 40, "{unseen} steps with running flows unseen");
    let (packets, flows, unseen) = run(marllb_sim::Packets::Stream);
    assert!(packets > 4 * flows, "{packets} packets for {flows} flows");
    assert!(unseen < 5, "{unseen} steps with running flows unseen");
}
