//! The testbed's command lines refuse bad input with the flag named (no root
//! needed: nothing is started).

use std::process::Command;

#[allow(clippy::expect_used)] // a test helper: its failure is the test's
fn refused(bin: &str, args: &[&str], needle: &str) {
    let out = Command::new(bin).args(args).output().expect("runs");
    assert!(!out.status.success(), "{args:?} was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn marllb_testbed_refuses_unknown_policies_and_out_of_range_options() {
    let bin = env!("CARGO_BIN_EXE_marllb-testbed");
    refused(bin, &["demo", "--policy", "sedd"], "--policy");
    refused(bin, &["demo", "--compare", "sed,nope"], "--compare");
    refused(bin, &["demo", "--duration", "0"], "--duration");
    refused(bin, &["demo", "--backends", "51"], "--backends");
    refused(bin, &["demo", "--polcy", "es"], "--polcy");
    refused(bin, &["show"], "show");
}

#[test]
fn marllb_loadgen_refuses_unknown_flags() {
    let bin = env!("CARGO_BIN_EXE_marllb-loadgen");
    refused(bin, &["--duration", "5", "--rat", "3"], "--rat");
    refused(bin, &["--capacities", "be0=x"], "--capacities");
}
