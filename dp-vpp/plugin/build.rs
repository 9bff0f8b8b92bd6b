//! Detects whether the VPP development headers are installed, the same way
//! `vpp-plugin`'s build script does. Without them `vpp-plugin` uses its
//! pre-generated bindings and does not compile its small C helper file
//! (`vlib_wrapper.c`), so the plugin provides those helpers itself
//! (`cfg(marllb_vpp_shim)`, see `src/shim.rs`); with them, the crate's own C
//! helpers are linked and the shim is left out.
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(marllb_vpp_shim)");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let probe = out.join("marllb_vpp_probe.c");
    let have_headers = std::fs::write(
        &probe,
        "#include <vnet/vnet.h>\n#include <vnet/plugin/plugin.h>\nint marllb_vpp_probe;\n",
    )
    .is_ok()
        && cc::Build::new()
            .file(&probe)
            .cargo_metadata(false)
            .cargo_warnings(false)
            .warnings(false)
            .try_compile("marllb_vpp_probe")
            .is_ok();
    if !have_headers {
        println!("cargo:rustc-cfg=marllb_vpp_shim");
    }
}
