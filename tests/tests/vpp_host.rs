//! The main job with the VPP host (`marllb-testbed demo --host vpp`): our
//! plugin in an installed VPP on an af_packet interface over the LB node's
//! `data0`, the controller attached to the plugin's region, a short replay of
//! the shared trace through real nginx + php-fpm backends. Skipped, with a
//! message, where no VPP is installed (CI): `MARLLB_VPP=/path/to/bin/vpp`, or
//! `vpp` on PATH.

use marllb_testbed::demo::{print_table, run_policy, DemoOptions};
use marllb_testbed::lb::Host;
use marllb_testbed::scenario::stickiness;
use marllb_testbed::vpp::{self, Lookup};

#[test]
#[ignore = "needs root (network namespaces, veth pairs) and an installed VPP (MARLLB_VPP or vpp on PATH; skipped without one): cargo xtask test runs it as root"]
fn the_demo_runs_through_an_installed_vpp() {
    marllb_testbed::netns::require_root();
    let install = match vpp::find().expect("looking for VPP") {
        Lookup::Found(v) => v,
        Lookup::Missing(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    println!("VPP: {install:?}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf();
    let mut o = DemoOptions::new(&root);
    o.host = Host::Vpp;
    // Bounded: 12 s of the trace (about 500 requests here), and the demo's
    // own limit on its loop (the replay's duration plus 60 s).
    o.duration = 12.0;
    o.compare = Vec::new();
    o.live = false;
    o.record_placements = true;
    let (dir, prefix) = marllb_testbed::netns::test_place("vpp", "v", 5);
    let run = run_policy(&prefix, &dir.join(o.policy.name()), &o, o.policy);
    let _ = std::fs::remove_dir_all(&dir);
    let run = run.expect("the demo through VPP");
    print_table(std::slice::from_ref(&run));
    let s = &run.summary;
    assert!(s.requests > 100, "{s:?}");
    assert_eq!(s.failed, 0, "{s:?}");
    assert_eq!(s.ok, s.requests, "{s:?}");
    // VPP forwarded them all: its own counters.
    let stats = run.host_stats.as_deref().unwrap_or_default();
    assert!(stats.contains("weights from controller"), "{stats}");
    let dropped = stats
        .lines()
        .find(|l| l.trim_start().starts_with("rx "))
        .and_then(|l| l.split_whitespace().last());
    assert_eq!(dropped, Some("0"), "{stats}");
    // Every connection's segments went to the one backend that answered it.
    let placed = run.placements.as_ref().expect("placements recorded");
    let st = stickiness(&run.records, placed);
    println!(
        "stickiness: {} connections alone on their client port, {} on reused ports, {} split, {} unplaced",
        st.checked,
        st.reused_port,
        st.split.len(),
        st.unplaced.len()
    );
    assert!(st.holds(), "{st:?}");
    assert_eq!(st.checked + st.reused_port, s.ok, "{st:?} of {s:?}");
    // No VPP, socket or segment is left behind.
    assert!(
        !std::path::Path::new(&format!("/dev/shm/{prefix}vpp0-vpe-api")).exists()
            && !std::path::Path::new(&format!("/dev/shm/marllb-{prefix}")).exists(),
        "VPP's shared memory left in /dev/shm"
    );
}
