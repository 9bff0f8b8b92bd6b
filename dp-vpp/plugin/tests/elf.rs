//! Reads the built `libmarllb_plugin.so` (this package's cdylib, built by cargo
//! before its tests) as VPP's plugin loader would: the registration section and
//! its version string, the exported registration symbol, the constructors that
//! register the nodes, features, CLI commands and init function, and the
//! symbols it expects VPP to provide.
#![allow(clippy::indexing_slicing)]

use std::path::PathBuf;

use marllb_core::classify::DropReason;
use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
use vpp_plugin::bindings::vlib_plugin_registration_t;

/// The shared object: `$MARLLB_PLUGIN_SO`, else the one cargo built for these
/// tests (`target/<profile>/deps/libmarllb_plugin.so`, next to this test), else
/// the one `cargo build` put in `target/<profile>/`.
fn so_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MARLLB_PLUGIN_SO") {
        return p.into();
    }
    // A test binary always has a path with two parents (`target/<profile>/deps/`).
    let deps = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
        .unwrap_or_default();
    let here = deps.join("libmarllb_plugin.so");
    if here.exists() {
        return here;
    }
    deps.parent().unwrap_or(&deps).join("libmarllb_plugin.so")
}

fn load() -> Vec<u8> {
    let p = so_path();
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it with cargo build -p marllb-vpp-plugin)",
            p.display()
        )
    })
}

/// Symbols the plugin may leave for VPP's libraries (vppinfra, vlib, vnet) to
/// provide at load time; anything else undefined would fail `dlopen`.
const VPP_EXPORTS: &[&str] = &[
    "_clib_error_return",
    // libvppinfra (the trace record's text grows a vppinfra vector).
    "_vec_resize_internal",
    "_unformat_fill_input",
    "feature_main",
    "unformat_init_string",
    "unformat_user",
    "unformat_vnet_sw_interface",
    "vec_free_not_inline",
    "vlib_buffer_func_main",
    "vlib_cli_output",
    "vlib_global_main",
    // libvlib: a traced buffer's record.
    "vlib_add_trace",
    "vnet_feature_enable_disable",
    "vnet_get_main",
];

#[test]
fn registration_section_carries_the_version() {
    let data = load();
    let f = object::File::parse(&*data).unwrap();
    assert_eq!(f.format(), object::BinaryFormat::Elf);
    let sec = f
        .section_by_name(".vlib_plugin_registration")
        .expect("section .vlib_plugin_registration");
    // VPP's loader rejects a section whose size is not sizeof(vlib_plugin_registration_t).
    assert_eq!(
        sec.size() as usize,
        core::mem::size_of::<vlib_plugin_registration_t>()
    );
    assert_eq!(sec.kind(), SectionKind::Data);
    let bytes = sec.data().unwrap();
    let off = core::mem::offset_of!(vlib_plugin_registration_t, version);
    let v = &bytes[off..off + 64];
    let end = v.iter().position(|&b| b == 0).unwrap();
    assert_eq!(
        std::str::from_utf8(&v[..end]).unwrap(),
        env!("CARGO_PKG_VERSION")
    );
    assert!(v[end..].iter().all(|&b| b == 0), "version zero-padded");

    // The registration symbol VPP looks up after dlopen, exported and in that section.
    let sym = f
        .dynamic_symbols()
        .find(|s| s.name() == Ok("vlib_plugin_registration"))
        .expect("exported vlib_plugin_registration");
    assert!(sym.is_definition() && sym.is_global());
    assert_eq!(sym.section_index(), Some(sec.index()));
}

#[test]
fn nodes_features_cli_and_init_are_registered() {
    let data = load();
    let f = object::File::parse(&*data).unwrap();
    let names: Vec<String> = f
        .symbols()
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .collect();
    let has = |part: &str| names.iter().any(|n| n.contains(part));
    for part in [
        "Ip4NodeReg_NODE_REGISTRATION",
        "Ip6NodeReg_NODE_REGISTRATION",
        "__vlib_add_node_registration_Ip4NodeReg",
        "__vlib_add_node_registration_Ip6NodeReg",
        "Ip4NodeReg_FN_REGISTRATION_default",
        "Ip6NodeReg_FN_REGISTRATION_default",
        "MARLLB_IP4_FEATURE",
        "MARLLB_IP6_FEATURE",
        "_VLIB_CLI_COMMAND_lb_rl_command",
        "_VLIB_CLI_COMMAND_show_lb_rl_command",
        "__vlib_cli_command_registration_lb_rl_command",
        "__vlib_cli_command_registration_show_lb_rl_command",
        "_VLIB_INIT_FUNCTION_INIT_marllb_init",
        "__vlib_add_init_function_init_marllb_init",
    ] {
        assert!(has(part), "symbol containing {part}");
    }
    // Constructors: 2 nodes, their per-CPU node functions (default, scalar,
    // x86-64-v3, x86-64-v4), 2 features, 2 CLI commands, 1 init function.
    const CTORS: u64 = 2 + 2 * 4 + 2 + 2 + 1;
    let init = f.section_by_name(".init_array").expect(".init_array");
    assert!(init.size() / 8 >= CTORS, "{} constructors", init.size() / 8);

    // The names VPP reads through the registrations.
    let ro: Vec<u8> = f
        .sections()
        .filter(|s| {
            s.kind() == SectionKind::ReadOnlyData || s.kind() == SectionKind::ReadOnlyString
        })
        .flat_map(|s| s.data().unwrap_or(&[]).to_vec())
        .collect();
    let contains = |s: &str| {
        let needle = format!("{s}\0");
        ro.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    let mut strings: Vec<String> = [
        "marllb-ip4",
        "marllb-ip6",
        "lb rl",
        "show lb rl",
        "ip4-unicast",
        "ip6-unicast",
        "ip4-lookup",
        "ip6-lookup",
        "error-drop",
        "interface-output",
        "forwarded",
        "icmp_replies",
        "to_host",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    strings.extend(DropReason::ALL.iter().map(|r| r.name().to_string()));
    for s in &strings {
        assert!(contains(s), "string {s:?} in read-only data");
    }
}

#[test]
fn only_vpp_and_libc_symbols_are_left_undefined() {
    use object::read::elf::{ElfFile64, FileHeader, Sym};
    let data = load();
    let elf = ElfFile64::<object::Endianness>::parse(&*data).unwrap();
    let endian = elf.endian();
    let sections = elf.elf_header().sections(endian, &*data).unwrap();
    let versions = sections
        .versions(endian, &*data)
        .unwrap()
        .expect("versioned dynsym");
    let dynsyms = sections
        .symbols(endian, &*data, object::elf::SHT_DYNSYM)
        .unwrap();
    let mut missing = Vec::new();
    for (i, sym) in dynsyms.iter().enumerate() {
        if sym.st_shndx(endian) != object::elf::SHN_UNDEF || i == 0 {
            continue;
        }
        let name = String::from_utf8_lossy(dynsyms.symbol_name(endian, sym).unwrap()).into_owned();
        assert!(
            !name.starts_with("vlib_helper_"),
            "{name}: vpp-plugin's C helper must be provided by the plugin"
        );
        let vi = versions.version_index(endian, object::SymbolIndex(i));
        // Versioned references (GLIBC_*, GCC_*) come from libc and libgcc.
        let system = versions.version(vi).unwrap().is_some();
        let weak = sym.st_bind() == object::elf::STB_WEAK;
        if !(system || weak || VPP_EXPORTS.contains(&name.as_str())) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "undefined beyond VPP and libc: {missing:?}"
    );
}
