//! `marllb-sim`: train, evaluate and compare load-balancing policies.

use clap::builder::TypedValueParser as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use marllb_policy::PolicyKind;
use marllb_sim::eval::{evaluate, plot, result_line, table, Policy};
use marllb_sim::scenario::{Scenario, SplitChange};
use marllb_sim::train::{train, Algorithm, TrainConfig};
use marllb_sim::workload::DEFAULT_LOOPS_PER_CPU_SECOND;
use marllb_sim::{parse_servers, ServerSpec, Sim, SimConfig, Workload, BASELINES};

#[derive(Parser, Debug)]
#[command(
    name = "marllb-sim",
    about = "MARLLB simulator, baselines, training and evaluation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug, Clone)]
struct Setting {
    /// Workload: poisson:RATE[:exp|:pareto[:ALPHA]|:lognormal[:SIGMA]|:bimodal[:P:RATIO]][:mean=SECONDS]
    /// or trace:FILE (the MARLLB trace format or a CSV of time,size_cpu_seconds).
    /// Ignored with --load.
    #[arg(long, default_value = "poisson:195")]
    workload: String,
    /// Poisson load as a fraction of the servers' true capacity (sizes from --sizes).
    #[arg(long)]
    load: Option<f64>,
    /// Job sizes with --load: exp, pareto[:ALPHA], lognormal[:SIGMA], bimodal[:P:RATIO].
    #[arg(long, default_value = "exp")]
    sizes: String,
    /// Server groups COUNTxCPUS[@SPEED], e.g. 4x2@0.6,3x4: CPUS is the configured
    /// weight, CPUS x SPEED the real capacity (MARLLB's moderate setting: 4x2,3x4).
    #[arg(long, default_value = "4x2,3x4")]
    servers: String,
    /// How a job uses a server's CPUs: cores (a job runs on at most one CPU)
    /// or quota (the running jobs share the whole capacity, as under a cgroup
    /// CPU quota).
    #[arg(long, default_value = "cores")]
    server_model: marllb_sim::ServerModel,
    /// Lognormal sigma of a per-server speed factor drawn from the seed.
    #[arg(long, default_value_t = 0.0)]
    speed_noise: f64,
    /// Capacity events: lines `TIME_S SERVER_INDEX FACTOR` (FACTOR multiplies the
    /// server's nominal speed from TIME_S on).
    #[arg(long)]
    capacity_events: Option<PathBuf>,
    /// Noisy neighbours K:BURST_S:PERIOD_S:FACTOR: every period, K servers drawn
    /// from the seed run at FACTOR for BURST_S seconds.
    #[arg(long)]
    noisy: Option<String>,
    /// LB nodes (1..=6).
    #[arg(long, default_value_t = 2)]
    lbs: usize,
    /// Traffic share of each LB node, e.g. 0.7,0.3 (default: equal).
    #[arg(long, value_delimiter = ',')]
    lb_split: Vec<f64>,
    /// A later change of the shares, TIME_S:S1,S2.. (repeatable).
    #[arg(long)]
    lb_split_change: Vec<String>,
    /// Connections left open, idle, after the response, SHARE:MEAN_S: that
    /// fraction of flows ends (as the LB node sees it) an exponential time of
    /// mean MEAN_S after the response (keep-alive, or no FIN and an idle timeout).
    #[arg(long)]
    linger: Option<String>,
    /// When flows' packets pass the LB node: stream (every running flow sends
    /// one each step; the default) or edges (only at the request, the response
    /// and the close, as through an L2 DSR balancer).
    #[arg(long)]
    packets: Option<String>,
    /// Simulated seconds of arrivals (then the system drains).
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Seconds at the start not counted in the statistics.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Trace LOOPS per CPU second (see sim/README.md for the calibration).
    #[arg(long, default_value_t = DEFAULT_LOOPS_PER_CPU_SECOND)]
    loops_per_cpu_second: f64,
    /// Mean job size of Poisson workloads, CPU seconds (default: the traces'
    /// mean, 3.67 M loops at the default calibration).
    #[arg(long)]
    mean_job: Option<f64>,
}

impl Setting {
    fn scenario(&self) -> Result<Scenario> {
        let mut sc = Scenario::new(&self.servers);
        sc.server_model = self.server_model;
        sc.lbs = self.lbs;
        sc.load = self.load;
        sc.sizes = self.sizes.clone();
        sc.workload = self.load.is_none().then(|| self.workload.clone());
        sc.speed_noise = self.speed_noise;
        sc.noisy = self.noisy.clone();
        sc.lb_split = self.lb_split.clone();
        sc.linger = self.linger.clone();
        sc.packets = self.packets.clone();
        for c in &self.lb_split_change {
            let (t, shares) = c
                .split_once(':')
                .ok_or_else(|| anyhow!("bad --lb-split-change {c:?}: expected TIME_S:S1,S2.."))?;
            sc.split_change.push(SplitChange {
                time: t
                    .parse()
                    .map_err(|_| anyhow!("bad --lb-split-change time {t:?}"))?,
                shares: shares
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| anyhow!("bad --lb-split-change shares {shares:?}"))?,
            });
        }
        sc.duration = self.duration;
        sc.warmup = self.warmup;
        if let Some(f) = &self.capacity_events {
            sc.read_capacity_events(f)
                .map_err(|e| anyhow!("--capacity-events {e}"))?;
        }
        Ok(sc)
    }

    fn build(&self) -> Result<(SimConfig, Workload)> {
        let (cfg, mut w) = self
            .scenario()?
            .build(self.seed)
            .map_err(|e| anyhow!("{e}"))?;
        if self.load.is_none() {
            // The workload spec with this command line's calibration.
            let mean = self.mean_job.unwrap_or(3.67e6 / self.loops_per_cpu_second);
            w = Workload::parse(&self.workload, mean, self.loops_per_cpu_second)?;
        }
        Ok((cfg, w))
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train a QMIX or SAC-GRU policy and export it as ONNX plus sidecar.
    Train {
        #[arg(long, value_enum)]
        agent: Algorithm,
        /// Servers, half with 2 CPUs and half with 4 (7 gives 4x2,3x4).
        #[arg(long, default_value_t = 7)]
        num_servers: usize,
        /// Explicit server groups (overrides --num-servers), e.g. 4x2,3x4.
        #[arg(long)]
        servers: Option<String>,
        /// LB nodes (default: 2 for qmix, 1 for sac-gru).
        #[arg(long)]
        lbs: Option<usize>,
        #[arg(long, default_value_t = 100)]
        episodes: usize,
        /// Simulated seconds per episode.
        #[arg(long, default_value_t = 30.0)]
        episode_secs: f64,
        #[arg(long, default_value = "models/policy.onnx")]
        save_path: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Continue from the checkpoint next to --save-path.
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 10)]
        checkpoint_every: usize,
        #[arg(long, default_value_t = 0.6)]
        load_min: f64,
        #[arg(long, default_value_t = 0.95)]
        load_max: f64,
        /// Learning rate.
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        /// Environment steps between gradient updates.
        #[arg(long, default_value_t = 4)]
        update_every: usize,
        #[arg(long)]
        no_progress: bool,
        /// QMIX: agent Q = sum (not mean) of the backends' chosen Q-values.
        #[arg(long)]
        q_sum: bool,
    },
    /// Train the `es` policy (log-step corrections of the configured weights,
    /// one small network shared by backends and LB nodes) by evolution
    /// strategies on random training scenarios; export ONNX + sidecar.
    TrainEs {
        #[arg(long, default_value = "models/es.onnx")]
        save_path: PathBuf,
        /// Backends of the exported graph (the network itself is per backend).
        #[arg(long, default_value_t = 7)]
        backends: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 120)]
        generations: usize,
        /// Antithetic pairs per generation.
        #[arg(long, default_value_t = 6)]
        pairs: usize,
        /// Training scenarios per generation.
        #[arg(long, default_value_t = 6)]
        batch: usize,
        #[arg(long, default_value_t = 0.08)]
        sigma: f32,
        #[arg(long, default_value_t = 0.03)]
        lr: f32,
        /// Simulated seconds per scenario.
        #[arg(long, default_value_t = 60.0)]
        episode_secs: f64,
        /// Validation scenarios (training-range seeds) for picking the best generation.
        #[arg(long, default_value_t = 12)]
        validation: usize,
        #[arg(long, default_value_t = 10)]
        validate_every: usize,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Tune adaptive SED's constants on training scenarios only (a grid; the
    /// same objective and scenario generator as train-es).
    TuneAdaptive {
        /// Training scenarios (training-range seeds).
        #[arg(long, default_value_t = 60)]
        scenarios: usize,
        #[arg(long, default_value_t = 60.0)]
        episode_secs: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        range: RangeArgs,
    },
    /// Evaluate one policy: table, JSON summary, RESULT line.
    Eval {
        /// ecmp|wcmp|lsq|sed|maglev|oracle or FILE.onnx (with FILE.onnx.json).
        #[arg(long)]
        policy: String,
        #[command(flatten)]
        setting: Setting,
    },
    /// Run every baseline and the given models on one workload; table and PNGs.
    Compare {
        /// Extra ONNX policies (repeatable).
        #[arg(long)]
        policy: Vec<String>,
        #[command(flatten)]
        setting: Setting,
        /// Where the PNGs go.
        #[arg(long, default_value = "results/compare")]
        out: PathBuf,
    },
    /// Every policy on every scenario of a suite file (paired seeds); tables and
    /// RESULT lines with 95 % bootstrap intervals against SED and adaptive SED.
    Suite {
        /// The suite (e.g. sim/suites/main.toml).
        file: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also write the report (markdown tables + RESULT lines) here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run only the first N seeds (a quick look; the report says so).
        #[arg(long)]
        seeds: Option<usize>,
        /// Run these policies instead of the file's (repeat the option once
        /// per policy; sed and adaptive-sed among them). The scenarios and
        /// seeds stay the file's: for ablations and for models trained after
        /// the suite was written.
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// The policy the RESULT lines are about (one of the policies).
        #[arg(long)]
        candidate: Option<String>,
    },
    /// Ablation of an `es` model: writes one model per feature with that
    /// feature held at 0 (its neutral value: "like the pool", "no
    /// correction"), `OUT_DIR/STEM-no-FEATURE.onnx`, to run in a suite
    /// beside the original (`suite FILE --policy ... --policy ...`).
    EsAblate {
        /// The trained model (its `.params.json` beside it).
        model: PathBuf,
        /// Where the ablated models go.
        #[arg(long)]
        out_dir: PathBuf,
        /// Backends of the exported graphs.
        #[arg(long, default_value_t = 7)]
        backends: usize,
    },
    /// Simulator speed: flow events per second on one core.
    Bench {
        /// Simulated seconds.
        #[arg(long, default_value_t = 2000.0)]
        duration: f64,
    },
}

fn servers_for(n: usize) -> Vec<ServerSpec> {
    let small = n.div_ceil(2);
    (0..n)
        .map(|i| ServerSpec::apache(if i < small { 2.0 } else { 4.0 }))
        .collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Train {
            agent,
            num_servers,
            servers,
            lbs,
            episodes,
            episode_secs,
            save_path,
            seed,
            resume,
            checkpoint_every,
            load_min,
            load_max,
            lr,
            update_every,
            no_progress,
            q_sum,
        } => {
            let kind = agent;
            let servers = match servers {
                Some(s) => parse_servers(&s).ok_or_else(|| anyhow!("bad --servers {s:?}"))?,
                None => servers_for(num_servers),
            };
            let lbs = lbs.unwrap_or(match kind {
                Algorithm::Qmix => 2,
                Algorithm::SacGru => 1,
            });
            let mut cfg = TrainConfig::new(kind, servers, lbs);
            cfg.episodes = episodes;
            cfg.episode_s = episode_secs;
            cfg.save_path = save_path;
            cfg.seed = seed;
            cfg.resume = resume;
            cfg.checkpoint_every = checkpoint_every.max(1);
            cfg.load_min = load_min;
            cfg.load_max = load_max.max(load_min);
            cfg.lr = lr;
            cfg.update_every = update_every.max(1);
            cfg.progress = !no_progress;
            cfg.q_sum = q_sum;
            let log = train(&cfg)?;
            let tail: Vec<f64> = log.iter().rev().take(10).map(|e| e.reward).collect();
            let mean = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
            println!(
                "wrote {} (+ .json sidecar, .safetensors); last-10-episode reward {mean:.4}",
                cfg.save_path.display()
            );
            println!("RESULT episodes={} reward_last10={mean:.4}", log.len());
        }
        Cmd::Eval { policy, setting } => {
            let (cfg, w) = setting.build()?;
            let p = Policy::parse(&policy)?;
            let cap: f64 = cfg.servers.iter().map(|s| s.cpus).sum();
            println!(
                "setting: {} servers ({} CPUs), {} LB nodes, offered load {:.0}% of capacity, {} s, seed {}",
                cfg.servers.len(),
                cap,
                cfg.lbs,
                100.0 * w.offered_load(cfg.duration) / cap,
                cfg.duration,
                cfg.seed
            );
            let s = evaluate(cfg, &w, &p)?;
            print!("{}", table(std::slice::from_ref(&s)));
            println!("{}", serde_json::to_string(&s)?);
            println!("{}", result_line(&s));
        }
        Cmd::Compare {
            policy,
            setting,
            out,
        } => {
            let (cfg, w) = setting.build()?;
            let mut policies: Vec<Policy> = BASELINES.map(Policy::Baseline).to_vec();
            for p in &policy {
                policies.push(Policy::parse(p)?);
            }
            let mut rows = Vec::new();
            for p in &policies {
                rows.push(evaluate(cfg.clone(), &w, p)?);
            }
            print!("{}", table(&rows));
            match plot(&rows, &out) {
                Ok(files) => {
                    for f in files {
                        println!("wrote {}", f.display());
                    }
                }
                Err(e) => eprintln!("plots skipped: {e}"),
            }
            if let Some(sed) = rows.iter().find(|r| r.policy == "sed") {
                for r in rows
                    .iter()
                    .filter(|r| !BASELINES.iter().any(|m| m.name() == r.policy))
                {
                    println!(
                        "{}: p90 JCT {:.3}x SED's, jain {:.4}",
                        r.policy,
                        r.jct_p90_ms / sed.jct_p90_ms.max(1e-9),
                        r.jain
                    );
                }
            }
        }
        Cmd::TrainEs {
            save_path,
            backends,
            seed,
            generations,
            pairs,
            batch,
            sigma,
            lr,
            episode_secs,
            validation,
            validate_every,
            range,
        } => {
            let cfg = marllb_sim::es::EsConfig {
                generations,
                pairs: pairs.max(1),
                batch: batch.max(1),
                sigma,
                lr,
                duration: episode_secs,
                reject_penalty: 10.0,
                seed,
                validate_every,
                validation: validation.max(1),
                range: range.into(),
            };
            let t0 = std::time::Instant::now();
            let (net, log) = marllb_sim::es::train(&cfg, |g| {
                println!(
                    "gen {:>4} loss {:+.4}{} ({:.0} s)",
                    g.generation,
                    g.loss,
                    g.validation
                        .map_or(String::new(), |v| format!(" validation {v:+.4}")),
                    t0.elapsed().as_secs_f64()
                );
            })?;
            net.save(&save_path, backends)?;
            let mut lp = save_path.as_os_str().to_owned();
            lp.push(".log.json");
            std::fs::write(&lp, serde_json::to_string(&log)?)?;
            let best = log
                .iter()
                .filter_map(|g| g.validation)
                .fold(f64::INFINITY, f64::min);
            println!(
                "wrote {} (+ .json sidecar, .params.json, .log.json)",
                save_path.display()
            );
            println!(
                "RESULT generations={} validation_best={best:.4} wall_s={:.0}",
                log.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        Cmd::TuneAdaptive {
            scenarios,
            episode_secs,
            seed,
            range,
        } => {
            use marllb_sim::es::{mean_loss, training_set, Runner};
            let mut rng = marllb_core::hash::SplitMix64::new(seed ^ 0x7075_6e65);
            let set = training_set(&mut rng, scenarios.max(1), episode_secs, &range.into())?;
            let mut best: Option<(f64, marllb_policy::AdaptiveSed)> = None;
            println!("{:>6} {:>6} {:>10}", "gain", "rate", "loss");
            for gain in [0.25f32, 0.5, 0.75, 1.0, 1.5] {
                for rate in [0.05f32, 0.1, 0.25, 0.5] {
                    let a = marllb_policy::AdaptiveSed {
                        gain,
                        rate,
                        ..Default::default()
                    };
                    let l = mean_loss(Runner::Adaptive(a), &set, 10.0)?;
                    println!("{gain:>6} {rate:>6} {l:>+10.4}");
                    if best.is_none_or(|(b, _)| l < b) {
                        best = Some((l, a));
                    }
                }
            }
            if let Some((l, a)) = best {
                println!(
                    "RESULT best_gain={} best_rate={} loss={l:.4} (mean log p90 ratio to SED + rejection penalty, {} training scenarios)",
                    a.gain, a.rate, set.len()
                );
            }
        }
        Cmd::EsAblate {
            model,
            out_dir,
            backends,
        } => {
            let net = marllb_sim::es::EsNet::load(&model)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let stem = model
                .file_stem()
                .map_or_else(|| "es".into(), |x| x.to_string_lossy().into_owned());
            for f in marllb_sim::es::FEATURES {
                let name = serde_json::to_value(f)?
                    .as_str()
                    .unwrap_or("feature")
                    .replace('_', "-");
                let path = out_dir.join(format!("{stem}-no-{name}.onnx"));
                let cut = net
                    .without(f)
                    .ok_or_else(|| anyhow!("{f:?} is not an es feature"))?;
                cut.save(&path, backends)?;
                println!("wrote {}", path.display());
            }
        }
        Cmd::Suite {
            file,
            threads,
            out,
            seeds,
            policies,
            candidate,
        } => {
            let mut suite = marllb_sim::suite::Suite::load(&file)?;
            if let Some(n) = seeds {
                suite.seeds.truncate(n.max(1));
                println!("(only the first {} seeds)", suite.seeds.len());
            }
            if !policies.is_empty() {
                println!(
                    "(policies given on the command line: {})",
                    policies.join(" ")
                );
                suite.policies = policies;
                suite.candidate = None;
            }
            if let Some(c) = candidate {
                suite.candidate = Some(c);
            }
            suite.check_policies()?;
            let t0 = std::time::Instant::now();
            let res = marllb_sim::suite::run(&suite, threads)?;
            let text = marllb_sim::suite::report(&suite, &res, &suite.candidate())?;
            print!("{text}");
            println!(
                "{} scenarios x {} seeds x {} policies in {:.0} s",
                suite.scenario.len(),
                suite.seeds.len(),
                res.policies.len(),
                t0.elapsed().as_secs_f64()
            );
            if let Some(o) = out {
                std::fs::write(&o, &text)?;
                println!("wrote {}", o.display());
            }
        }
        Cmd::Bench { duration } => {
            // 16 servers (8x2, 8x4 CPUs), 2 LB nodes, Poisson at 85 % of capacity.
            let servers = servers_for(16);
            let cap: f64 = servers.iter().map(|s| s.cpus).sum();
            let mean = 3.67e6 / DEFAULT_LOOPS_PER_CPU_SECOND;
            let w = Workload::Poisson {
                rate: 0.85 * cap / mean,
                size: marllb_sim::workload::SizeDist::Exp { mean },
            };
            let mut last = 0.0;
            for m in [
                PolicyKind::Ecmp,
                PolicyKind::Maglev,
                PolicyKind::Oracle,
                PolicyKind::Sed,
            ] {
                let cfg = SimConfig {
                    servers: servers.clone(),
                    lbs: 2,
                    step_s: 0.25,
                    duration,
                    drain: false,
                    warmup: 0.0,
                    features: false,
                    seed: 1,
                    conditions: Default::default(),
                };
                let t0 = std::time::Instant::now();
                let stats = Sim::new(cfg, &w, m).run();
                let dt = t0.elapsed().as_secs_f64();
                last = stats.events as f64 / dt;
                println!(
                    "{:<8} {:>10} events in {:.3} s: {:.0} events/s",
                    m.name(),
                    stats.events,
                    dt,
                    last
                );
            }
            println!("RESULT events_per_s={last:.0}");
        }
    }
    Ok(())
}

/// What train-es's and tune-adaptive's scenarios range over.
#[derive(clap::Args, Debug, Clone, Copy)]
struct RangeArgs {
    /// Most LB nodes in a scenario (1 to 6; each scenario draws 1..=N
    /// uniformly). The shipped models were trained with 3.
    #[arg(long, default_value_t = marllb_sim::es::DEFAULT_MAX_LBS, value_parser = clap::value_parser!(u64).range(1..=6).map(|v: u64| v as usize))]
    max_lbs: usize,
    /// Lowest offered load of a scenario (each draws uniformly up to 0.92).
    /// The shipped es.onnx was trained from 0.55.
    #[arg(long, default_value_t = marllb_sim::es::DEFAULT_MIN_LOAD, value_parser = min_load)]
    min_load: f64,
    /// Fraction of the scenarios whose servers are CPU quotas (the running
    /// jobs share the whole capacity) rather than cores; 0 draws none and
    /// keeps the earlier models' draws.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    quota_share: f64,
    /// Fraction of the scenarios whose connections linger, idle, after their
    /// response (a share of flows in [0.2, 0.95] with a mean idle time of
    /// 2-40 s, as `--linger`); 0 draws none and keeps the earlier draws.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    linger_share: f64,
    /// Fraction of the scenarios whose flows send packets only at the
    /// request, the response and the close (`--packets edges`); 0 draws none
    /// and keeps the earlier draws.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    edges_share: f64,
}

impl From<RangeArgs> for marllb_sim::es::TrainingRange {
    fn from(r: RangeArgs) -> Self {
        Self {
            max_lbs: r.max_lbs,
            min_load: r.min_load,
            quota_share: r.quota_share,
            linger_share: r.linger_share,
            edges_share: r.edges_share,
        }
    }
}

/// `--quota-share`, `--linger-share`, `--edges-share`: a fraction in [0, 1].
fn fraction(s: &str) -> std::result::Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{s}: must be in [0, 1]"))
    }
}

/// `--min-load`: a load in [0.05, 0.92).
fn min_load(s: &str) -> std::result::Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.05..marllb_sim::es::MAX_LOAD).contains(&x) {
        Ok(x)
    } else {
        Err(format!(
            "{s}: must be in [0.05, {})",
            marllb_sim::es::MAX_LOAD
        ))
    }
}
