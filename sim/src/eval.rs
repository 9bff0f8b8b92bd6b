//! Evaluation of baselines and ONNX policies, and the comparison plots.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use marllb_policy::action_to_weights;
use serde::Serialize;

use crate::engine::{Sim, SimConfig, Stats};
use crate::workload::Workload;
use marllb_policy::model::{Loaded, Policy as Runner};
use marllb_policy::PolicyKind;

/// A policy to evaluate.
#[derive(Debug, Clone)]
pub enum Policy {
    /// A heuristic.
    Baseline(PolicyKind),
    /// Adaptive SED with constants other than the defaults
    /// (`adaptive-sed:gain=G,rate=R[,max_step=S][,clamp=C]`).
    Adaptive {
        /// Display name (the policy string as given).
        name: String,
        /// The constants.
        params: marllb_policy::AdaptiveSed,
    },
    /// A trained model, run by the controller's runner (`marllb_policy::model`).
    Onnx {
        /// Display name (file stem).
        name: String,
        /// The checked, optimized model (its sidecar inside).
        model: Box<Loaded>,
    },
}

impl Policy {
    /// A baseline name (`ecmp|wcmp|lsq|sed|maglev|oracle|adaptive-sed|p2c-ewma`),
    /// `adaptive-sed:KEY=VALUE,..` (keys `gain`, `rate`, `max_step`, `clamp`;
    /// the others keep their defaults) or a path to `FILE.onnx` (with its sidecar).
    pub fn parse(s: &str) -> Result<Self> {
        match PolicyKind::from_name(s) {
            Some(k) if k.is_learned() => {
                anyhow::bail!("policy {s:?} is a learned one: give its model (models/{s}.onnx)")
            }
            Some(k) => return Ok(Policy::Baseline(k)),
            None => {}
        }
        if let Some(rest) = s.strip_prefix("adaptive-sed:") {
            let mut params = marllb_policy::AdaptiveSed::default();
            for kv in rest.split(',') {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow!("policy {s:?}: {kv:?} is not KEY=VALUE"))?;
                let v: f32 = v
                    .parse()
                    .map_err(|e| anyhow!("policy {s:?}: {k}: {v:?} is not a number ({e})"))?;
                params
                    .set(k, v)
                    .map_err(|e| anyhow!("policy {s:?}: {k}: {e}"))?;
            }
            return Ok(Policy::Adaptive {
                name: s.to_string(),
                params,
            });
        }
        let path = PathBuf::from(s);
        let model = Loaded::load(&path, None).map_err(|e| {
            anyhow!("policy {s:?} is not a baseline and its model is unusable: {e}")
        })?;
        let name = path
            .file_stem()
            .map_or_else(|| s.to_string(), |x| x.to_string_lossy().into_owned());
        Ok(Policy::Onnx {
            name,
            model: Box::new(model),
        })
    }

    /// Display name.
    pub fn name(&self) -> String {
        match self {
            Policy::Baseline(m) => m.name().to_string(),
            Policy::Adaptive { name, .. } | Policy::Onnx { name, .. } => name.clone(),
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Policy name.
    pub policy: String,
    /// Mean JCT, ms.
    pub jct_mean_ms: f64,
    /// Median JCT, ms.
    pub jct_p50_ms: f64,
    /// 90th percentile JCT, ms.
    pub jct_p90_ms: f64,
    /// 99th percentile JCT, ms.
    pub jct_p99_ms: f64,
    /// Jain fairness of per-server utilization (load / capacity) over the run.
    pub jain: f64,
    /// Mean over steps of the per-step Jain fairness of utilization.
    pub jain_steps: f64,
    /// Flows refused by a full backlog.
    pub rejected: u64,
    /// Flows counted.
    pub arrived: u64,
    /// Flows completed and counted.
    pub completed: u64,
    /// Per-server utilization.
    pub utilization: Vec<f64>,
    /// Simulated events (arrivals + completions).
    pub events: u64,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
    /// Agent policies: mean weight each backend got over steps and nodes.
    pub mean_weights: Vec<f64>,
    /// Sorted JCTs, ms (not serialized).
    #[serde(skip)]
    pub jct_sorted_ms: Vec<f64>,
    /// Per-step fairness (not serialized).
    #[serde(skip)]
    pub fairness: Vec<(f64, f64)>,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summarize(policy: String, stats: Stats, wall_s: f64) -> Summary {
    let mut v: Vec<f64> = stats.jct.iter().map(|x| x * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    let steps = stats.fairness.len().max(1) as f64;
    Summary {
        policy,
        jct_mean_ms: mean,
        jct_p50_ms: percentile(&v, 0.5),
        jct_p90_ms: percentile(&v, 0.9),
        jct_p99_ms: percentile(&v, 0.99),
        jain: crate::engine::jain(&stats.utilization),
        jain_steps: stats.fairness.iter().map(|x| x.1).sum::<f64>() / steps,
        rejected: stats.rejected,
        arrived: stats.arrived,
        completed: v.len() as u64,
        utilization: stats.utilization.clone(),
        events: stats.events,
        wall_s,
        mean_weights: Vec::new(),
        jct_sorted_ms: v,
        fairness: stats.fairness,
    }
}

/// Runs `policy` on `workload` with `cfg` (features are turned on for models).
pub fn evaluate(mut cfg: SimConfig, workload: &Workload, policy: &Policy) -> Result<Summary> {
    let t0 = std::time::Instant::now();
    match policy {
        Policy::Baseline(m) => {
            cfg.features = false;
            let stats = Sim::new(cfg, workload, *m).run();
            Ok(summarize(policy.name(), stats, t0.elapsed().as_secs_f64()))
        }
        Policy::Adaptive { params, .. } => {
            let mut sim = Sim::new(cfg, workload, PolicyKind::AdaptiveSed);
            sim.set_adaptive(*params);
            Ok(summarize(
                policy.name(),
                sim.run(),
                t0.elapsed().as_secs_f64(),
            ))
        }
        Policy::Onnx { model, .. } => {
            let meta = model.meta();
            anyhow::ensure!(
                meta.backends == cfg.servers.len(),
                "the policy was trained for {} backends, the setting has {}",
                meta.backends,
                cfg.servers.len()
            );
            cfg.features = true;
            let lbs = cfg.lbs;
            // Every learned kind is SED over the weights set each step.
            let mut sim = Sim::new(cfg, workload, PolicyKind::Es);
            if matches!(meta.action, marllb_policy::ActionSpec::LogStep { .. }) {
                sim.set_initial_action(0.0);
            }
            // One runner (with its recurrent state) per LB node, one plan.
            let mut runners: Vec<Runner> =
                (0..lbs).map(|_| Runner::new((**model).clone())).collect();
            let (mut obs, mut scores, mut real, mut q16) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut wsum = vec![0f64; meta.backends];
            let mut wn = 0f64;
            while sim.run_step() {
                for (lb, runner) in runners.iter_mut().enumerate() {
                    let Some(node) = sim.lbs.get(lb) else {
                        continue;
                    };
                    node.features.observation(meta, &mut obs);
                    runner.infer(&obs, &mut scores)?;
                    // The hidden state moves on with every run (the
                    // simulator's rule since round 1; the controller commits
                    // only an accepted action's).
                    runner.commit();
                    // Refused outputs keep the previous weights, as in the controller.
                    if action_to_weights(meta, &scores, &node.features, &mut real, &mut q16).is_ok()
                    {
                        sim.apply_action(lb, &real, &q16);
                        for (s, w) in wsum.iter_mut().zip(&real) {
                            *s += f64::from(*w);
                        }
                        wn += 1.0;
                    }
                }
            }
            let stats = sim.into_stats();
            let mut s = summarize(policy.name(), stats, t0.elapsed().as_secs_f64());
            s.mean_weights = wsum.iter().map(|x| x / wn.max(1.0)).collect();
            Ok(s)
        }
    }
}

/// The table header and one row per summary.
pub fn table(rows: &[Summary]) -> String {
    let mut s = format!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}\n",
        "policy", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "jain", "rejected", "flows"
    );
    for r in rows {
        s += &format!(
            "{:<14} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7.4} {:>9} {:>9}\n",
            r.policy,
            r.jct_mean_ms,
            r.jct_p50_ms,
            r.jct_p90_ms,
            r.jct_p99_ms,
            r.jain,
            r.rejected,
            r.arrived
        );
    }
    s
}

/// The closing line of `eval`.
pub fn result_line(r: &Summary) -> String {
    format!(
        "RESULT jct_mean_ms={:.2} jct_p90_ms={:.2} jct_p99_ms={:.2} jain={:.4} rejected={}",
        r.jct_mean_ms, r.jct_p90_ms, r.jct_p99_ms, r.jain, r.rejected
    )
}

fn register_font() -> Result<()> {
    const CANDIDATES: [&str; 4] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ];
    let path = CANDIDATES
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| anyhow!("no TrueType font found (apt-get install fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))?;
    Ok(())
}

/// One chart: a line per series (policy), with a legend.
struct Chart<'a> {
    path: &'a Path,
    caption: &'a str,
    caption_size: u32,
    x_desc: &'a str,
    y_desc: &'a str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
}

impl Chart<'_> {
    fn draw(&self, series: Vec<(String, Vec<(f64, f64)>)>) -> Result<()> {
        use plotters::prelude::*;
        let colors = [
            RED,
            BLUE,
            GREEN,
            MAGENTA,
            CYAN,
            BLACK,
            RGBColor(255, 140, 0),
            RGBColor(128, 0, 128),
            RGBColor(0, 128, 128),
        ];
        let root = BitMapBackend::new(self.path, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.caption, ("sans-serif", self.caption_size))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(self.x.clone(), self.y.clone())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, (label, pts)) in series.into_iter().enumerate() {
            let c = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
        Ok(())
    }
}

/// Writes `jct_cdf.png` and `fairness.png` into `dir`.
pub fn plot(rows: &[Summary], dir: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    // JCT CDF up to the p99 of the policies, but no further than 5x the best
    // p99, so that one very bad policy does not squash the others.
    let p99s: Vec<f64> = rows
        .iter()
        .map(|r| percentile(&r.jct_sorted_ms, 0.99))
        .collect();
    let best = p99s.iter().copied().fold(f64::INFINITY, f64::min);
    let xmax = p99s
        .iter()
        .copied()
        .fold(1.0f64, f64::max)
        .min(5.0 * best.max(1e-3));
    let cdf = dir.join("jct_cdf.png");
    let series = rows
        .iter()
        .map(|r| {
            let n = r.jct_sorted_ms.len().max(1);
            let stride = (n / 2000).max(1);
            let pts = r
                .jct_sorted_ms
                .iter()
                .enumerate()
                .step_by(stride)
                .map(|(k, v)| (v.min(xmax), (k + 1) as f64 / n as f64))
                .collect();
            (r.policy.clone(), pts)
        })
        .collect();
    Chart {
        path: &cdf,
        caption: "JCT CDF",
        caption_size: 24,
        x_desc: "job completion time (ms)",
        y_desc: "fraction of flows",
        x: 0.0..xmax,
        y: 0.0..1.0,
    }
    .draw(series)?;

    // Jain index over time, 4 s moving average (16 samples of 250 ms).
    let fair = dir.join("fairness.png");
    let tmax = rows
        .iter()
        .filter_map(|r| r.fairness.last().map(|x| x.0))
        .fold(1.0f64, f64::max);
    let w = 16usize;
    let series = rows
        .iter()
        .map(|r| {
            let pts = r
                .fairness
                .windows(w)
                .step_by(2)
                .map(|win| {
                    let t = win.last().map_or(0.0, |x| x.0);
                    (
                        t,
                        (win.iter().map(|x| x.1).sum::<f64>() / w as f64).max(0.5),
                    )
                })
                .collect();
            (r.policy.clone(), pts)
        })
        .collect();
    Chart {
        path: &fair,
        caption: "Jain fairness of utilization over time (4 s moving average)",
        caption_size: 22,
        x_desc: "time (s)",
        y_desc: "Jain index",
        x: 0.0..tmax,
        y: 0.5..1.0,
    }
    .draw(series)?;
    Ok(vec![cdf, fair])
}
