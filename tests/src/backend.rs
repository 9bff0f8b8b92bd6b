//! Real backends: nginx + php-fpm in a namespace, like the MARLLB testbed's
//! Apache + PHP (a pool of 32 PHP workers and a listen backlog of 128 by
//! default), serving
//!
//! * `/dummy.php/?n=LOOPS`: a PHP busy loop of LOOPS iterations (what the shared
//!   traces request), answering `<backend id> <loops>`;
//! * `/static.html`: a static page (health checks).
//!
//! nginx listens on the VIP (which the backend has on its loopback: L2 direct
//! server return) and on the backend's own address. The PHP workers run in a CPU
//! cgroup so that backends of different capacity can share two cores.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::netns::Testbed;
use crate::topology::Process;

/// How one backend is built.
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// Short id (`be0`, ...), also the namespace role.
    pub id: String,
    /// Its own address on the server segment.
    pub addr: String,
    /// CPUs its PHP workers may use (cgroup quota), e.g. 0.25.
    pub cpus: f64,
    /// PHP workers (Apache's MaxRequestWorkers in the MARLLB testbed: 32).
    pub workers: u32,
    /// Listen backlog (MARLLB: 128).
    pub backlog: u32,
}

impl BackendSpec {
    /// The weight the operator configures for it in either host (its CPU
    /// quota, four per CPU): SED's and WCMP's weight, the controller's base.
    pub fn configured_weight(&self) -> f64 {
        self.cpus.max(0.001) * 4.0
    }
}

/// The PHP busy-loop page.
const DUMMY_PHP: &str = r#"<?php
$n = isset($_GET['n']) ? intval($_GET['n']) : 0;
if ($n < 0) { $n = 0; }
if ($n > 200000000) { $n = 200000000; }
for ($i = 0; $i < $n; $i++) { }
header('Content-Type: text/plain');
echo getenv('MARLLB_BACKEND') ?: ($_SERVER['MARLLB_BACKEND'] ?? '?'), ' ', $n, "\n";
"#;

fn nginx_conf(dir: &Path, spec: &BackendSpec, vip: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    keepalive_timeout 0;
    server {{
        listen {vip}:80 backlog={backlog};
        listen {addr}:80 backlog={backlog};
        root {d}/www;
        location = /static.html {{ add_header X-Backend {id}; }}
        location ~ ^/dummy\.php(/|$) {{
            fastcgi_split_path_info ^(/dummy\.php)(/.*)$;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {d}/www/dummy.php;
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param MARLLB_BACKEND {id};
            fastcgi_read_timeout 120s;
            fastcgi_pass unix:{d}/php.sock;
        }}
    }}
}}
"#,
        backlog = spec.backlog,
        addr = spec.addr,
        id = spec.id,
    )
}

fn fpm_conf(dir: &Path, spec: &BackendSpec) -> String {
    let d = dir.display();
    format!(
        r#"[global]
pid = {d}/php-fpm.pid
error_log = {d}/php-fpm.log
daemonize = no

[www]
user = root
group = root
listen = {d}/php.sock
listen.backlog = {backlog}
listen.mode = 0666
pm = static
pm.max_children = {workers}
clear_env = no
env[MARLLB_BACKEND] = {id}
"#,
        backlog = spec.backlog,
        workers = spec.workers,
        id = spec.id,
    )
}

/// A running backend.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Its spec.
    pub spec: BackendSpec,
    /// Its namespace.
    pub ns: String,
    /// MAC of its server-segment interface.
    pub mac: String,
    /// Its working directory (configs, logs).
    pub dir: PathBuf,
}

impl Backend {
    /// Starts its nginx again (after it was killed), its output to `out`;
    /// returns at once (probe it to know when it answers).
    pub fn restart_nginx(&self, tb: &mut Testbed, out: &Path) -> Result<()> {
        start_nginx(tb, &self.ns, &self.spec.id, &self.dir, out)
    }

    /// Sets its PHP workers' CPU limit to `factor` × its configured CPUs
    /// (`spec.cpus`) from now on (1.0 restores it); the cgroup's quota changes,
    /// running requests included. Returns the CPUs now allowed.
    pub fn set_cpu_factor(&self, tb: &Testbed, factor: f64) -> Result<f64> {
        if !(factor.is_finite() && factor > 0.0) {
            anyhow::bail!(
                "CPU factor {factor} for {}: must be a positive number",
                self.spec.id
            );
        }
        let cpus = self.spec.cpus * factor;
        let quota = tb.set_cpu_limit(&self.spec.id, cpus)?;
        Ok(quota as f64 / crate::netns::CFS_PERIOD_US as f64)
    }
}

/// Writes the configs and starts php-fpm (in its CPU cgroup) and nginx for a
/// backend whose namespace `ns` already exists with its address configured.
pub fn start(tb: &mut Testbed, ns: &str, spec: &BackendSpec, vip: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("www"))?;
    for t in ["tmp-body", "tmp-proxy", "tmp-fcgi", "tmp-uwsgi", "tmp-scgi"] {
        std::fs::create_dir_all(dir.join(t))?;
    }
    std::fs::write(dir.join("www/dummy.php"), DUMMY_PHP)?;
    std::fs::write(dir.join("www/static.html"), format!("{}\n", spec.id))?;
    std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, spec, vip))?;
    std::fs::write(dir.join("php-fpm.conf"), fpm_conf(dir, spec))?;
    let fpm_conf = dir.join("php-fpm.conf");
    // php-fpm enters its CPU cgroup before it starts (and forks its workers).
    let procs = tb.cpu_cgroup(&spec.id, spec.cpus)?;
    let script = format!(
        "echo $$ > {procs} && exec ip netns exec {ns} php-fpm8.2 -F -R -y {}",
        fpm_conf.display()
    );
    tb.spawn_root(
        &Process::PhpFpm(&spec.id).label(),
        "sh",
        &["-c", &script],
        &dir.join("php-fpm.out"),
    )?;
    start_nginx(tb, ns, &spec.id, dir, &dir.join("nginx.out"))?;
    // Wait until the socket answers (bounded).
    let sock = dir.join("php.sock");
    for _ in 0..100 {
        if sock.exists() && dir.join("nginx.pid").exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("backend {} did not come up; see {}", spec.id, dir.display())
}

/// Starts backend `id`'s nginx in `ns` from its configuration in `dir`
/// ([`Process::Nginx`]), its output to `out`.
fn start_nginx(tb: &mut Testbed, ns: &str, id: &str, dir: &Path, out: &Path) -> Result<()> {
    tb.spawn(
        &Process::Nginx(id).label(),
        ns,
        "nginx",
        &[
            "-c",
            &dir.join("nginx.conf").to_string_lossy(),
            "-p",
            &dir.to_string_lossy(),
        ],
        out,
    )?;
    Ok(())
}

/// Probes `http://addr/static.html` from inside `client_ns` with curl; true on 200.
pub fn probe(client_ns: &str, addr: &str) -> Result<bool> {
    let out = crate::netns::in_ns(client_ns, "curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
        ])
        .arg(format!("http://{addr}/static.html"))
        .output()
        .context("running curl (Debian package curl)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "200")
}
