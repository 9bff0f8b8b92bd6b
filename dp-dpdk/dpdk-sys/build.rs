//! Finds the system DPDK with pkg-config, generates bindings for `wrapper.h`
//! with bindgen (allowlisted) and compiles the C shim for the `static inline`
//! fast-path functions.

use std::env;
use std::path::PathBuf;

const MIN_VERSION: &str = "22.11";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!(
                "\nerror: DPDK >= {MIN_VERSION} was not found through pkg-config ({e}).\n\
                 On Debian/Ubuntu install it with:\n\n    \
                 apt-get install libdpdk-dev pkg-config libclang-dev clang\n\n\
                 (or set PKG_CONFIG_PATH to a DPDK build's lib/pkgconfig directory).\n"
            );
            std::process::exit(1);
        }
    };

    // pkg-config's cflags (include dirs, `-include rte_config.h`, -march) as DPDK
    // itself wants them: the shim and bindgen must see the same configuration.
    let cflags: Vec<String> = pkg_config::get_variable("libdpdk", "cflags")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_else(|| cflags_from_cli().unwrap_or_default());
    let mut clang_args: Vec<String> = Vec::new();
    for p in &lib.include_paths {
        clang_args.push(format!("-I{}", p.display()));
    }
    clang_args.extend(cflags.iter().cloned());

    let mut build = cc::Build::new();
    build
        .file("shim.c")
        .include(".")
        .opt_level(3)
        .warnings(true);
    for p in &lib.include_paths {
        build.include(p);
    }
    for f in &cflags {
        if !f.starts_with("-I") {
            build.flag(f);
        }
    }
    build.compile("marllb_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&clang_args)
        .clang_arg("-I.")
        .allowlist_function("marllb_.*")
        .allowlist_function("rte_eal_(init|cleanup|remote_launch|wait_lcore|mp_wait_lcore)")
        .allowlist_function("rte_(get_next_lcore|lcore_count|get_main_lcore|socket_id|strerror|version|get_tsc_hz)")
        .allowlist_function("rte_pktmbuf_(pool_create|free_bulk)")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count)")
        .allowlist_function("rte_eth_(dev_count_avail|dev_info_get|dev_configure|rx_queue_setup|tx_queue_setup|dev_start|dev_stop|dev_close|promiscuous_enable|macaddr_get|stats_get|dev_socket_id|dev_set_mtu|dev_adjust_nb_rx_tx_desc|find_next_owned_by|dev_get_name_by_port)")
        .allowlist_type("rte_mbuf")
        .allowlist_type("rte_eth_(conf|dev_info|stats|rxconf|txconf)")
        .allowlist_type("rte_ether_addr")
        .allowlist_var("RTE_MAX_LCORE|RTE_MAX_ETHPORTS|RTE_ETH_MQ_RX_.*|RTE_ETH_MQ_TX_.*|RTE_PKTMBUF_HEADROOM|RTE_MBUF_DEFAULT_.*|RTE_VERSION.*")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| {
            eprintln!("error: bindgen failed on wrapper.h ({e}); is libclang-dev installed?");
            std::process::exit(1);
        });
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    if let Err(e) = bindings.write_to_file(out.join("bindings.rs")) {
        eprintln!("error: writing bindings.rs: {e}");
        std::process::exit(1);
    }
}

/// `pkg-config --cflags libdpdk` split into words (fallback when the `cflags`
/// variable is not exported by the .pc file).
fn cflags_from_cli() -> Option<Vec<String>> {
    let out =
        std::process::Command::new(env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into()))
            .args(["--cflags", "libdpdk"])
            .output()
            .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|s| !s.starts_with("-I"))
            .map(String::from)
            .collect(),
    )
}
