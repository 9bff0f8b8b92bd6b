//! # marllb_plugin.so
//!
//! MARLLB as a VPP plugin: the registrations VPP reads when it loads the
//! shared object, and the thin glue from VPP's calling conventions to
//! `marllb-vpp` (which holds everything testable without VPP).
//!
//! * `vlib_plugin_registration` in section `.vlib_plugin_registration`;
//! * graph nodes `marllb-ip4` and `marllb-ip6`, features on the `ip4-unicast`
//!   and `ip6-unicast` arcs (before `ip4-lookup` / `ip6-lookup`), next nodes
//!   `error-drop`, `ip4-lookup`, `ip6-lookup`, `interface-output`, and one error
//!   counter per marllb-core drop reason plus `forwarded`, `icmp_replies`,
//!   `to_host` (shown by `show errors` / `show node counters`);
//! * CLI commands `lb rl ...` and `show lb rl ...` (grammar in
//!   `marllb_vpp::cli`);
//! * an init function that creates the plugin state.
//!
//! Unsafe code is confined to this file's node glue and `shim.rs`.

use core::ffi::{c_char, CStr};
use std::ffi::CString;

use marllb_core::classify::{DropReason, Verdict};
use marllb_core::pipeline::MAX_BATCH;
use marllb_vpp::cli::{parse_lb, parse_show, Command};
use marllb_vpp::frame::{
    process_frame, FrameBuffers, FrameCounts, Next, NodeFamily, TraceNote, TraceVerdict,
    LOG2_CACHE_LINE, NEXT_FEATURE, NEXT_NODE_NAMES,
};
use marllb_vpp::runtime::{Runtime, SWEEP_MAX_PER_FRAME};
use vpp_plugin::bindings::{
    unformat_input_t, unformat_user, uword, va_list, vlib_buffer_func_main, vlib_buffer_t,
    vlib_cli_output, vnet_get_main, vnet_sw_interface_type_t_VNET_SW_INTERFACE_TYPE_HARDWARE,
    VLIB_NODE_FLAG_TRACE,
};
use vpp_plugin::vlib::buffer::BufferFlags;
use vpp_plugin::vlib::node::{Node, VectorBufferIndex};
use vpp_plugin::vlib::{self, BarrierHeldMainRef, BufferIndex, BufferRef};
use vpp_plugin::vnet::types::SwIfIndex;
use vpp_plugin::vppinfra::error::ErrorStack;
use vpp_plugin::vppinfra::unformat::UnformatInput;
use vpp_plugin::vppinfra::VecRef;
use vpp_plugin::{
    vlib_cli_command, vlib_init_function, vlib_node, vlib_plugin_register, vnet_feature_init,
    ErrorCounters, NextNodes,
};

#[cfg(marllb_vpp_shim)]
mod shim;

vlib_plugin_register! {
    version: "0.1.0",
    description: "MARLLB: L4 load balancer with learned backend weights",
    version_required: vpp_plugin::VPP_BUILD_VER,
}

/// Next nodes; order and names are `marllb_vpp::frame::Next` / `NEXT_NODE_NAMES`.
#[derive(NextNodes, Clone, Copy, Debug)]
pub enum LbNext {
    /// `error-drop`.
    #[next_node = "error-drop"]
    Drop,
    /// `ip4-lookup`.
    #[next_node = "ip4-lookup"]
    Ip4Lookup,
    /// `ip6-lookup`.
    #[next_node = "ip6-lookup"]
    Ip6Lookup,
    /// `interface-output`.
    #[next_node = "interface-output"]
    InterfaceOutput,
}

const _: () = {
    assert!(LbNext::Drop as u16 == Next::Drop as u16);
    assert!(LbNext::Ip4Lookup as u16 == Next::Ip4Lookup as u16);
    assert!(LbNext::Ip6Lookup as u16 == Next::Ip6Lookup as u16);
    assert!(LbNext::InterfaceOutput as u16 == Next::InterfaceOutput as u16);
    assert!(NEXT_NODE_NAMES.len() == 4);
};

/// Node counters: the first [`DropReason::COUNT`] are the core's drop reasons
/// in counter order, under the same names.
#[derive(ErrorCounters, Clone, Copy, Debug)]
pub enum LbError {
    /// `malformed`.
    #[error_counter(name = "malformed", description = "frame failed to parse", severity = ERROR)]
    Malformed,
    /// `bad_checksum`.
    #[error_counter(name = "bad_checksum", description = "bad IPv4 header checksum", severity = ERROR)]
    BadChecksum,
    /// `no_vip`.
    #[error_counter(name = "no_vip", description = "VIP address, no VIP for protocol/port", severity = ERROR)]
    NoVip,
    /// `no_live_backend`.
    #[error_counter(name = "no_live_backend", description = "no backend can take the flow", severity = ERROR)]
    NoLiveBackend,
    /// `ttl_expired`.
    #[error_counter(name = "ttl_expired", description = "TTL / hop limit expired", severity = ERROR)]
    TtlExpired,
    /// `fragment_no_state`.
    #[error_counter(name = "fragment_no_state", description = "fragment without its first fragment", severity = ERROR)]
    FragmentNoState,
    /// `too_big_no_df`.
    #[error_counter(name = "too_big_no_df", description = "too big after encapsulation, no DF", severity = ERROR)]
    TooBigNoDf,
    /// `too_big_icmp_error`.
    #[error_counter(name = "too_big_icmp_error", description = "too big ICMP error (no ICMP about ICMP)", severity = ERROR)]
    TooBigIcmpError,
    /// `no_headroom`.
    #[error_counter(name = "no_headroom", description = "no headroom for encapsulation", severity = ERROR)]
    NoHeadroom,
    /// `rewrite_failed`.
    #[error_counter(name = "rewrite_failed", description = "rewrite found the frame inconsistent", severity = ERROR)]
    RewriteFailed,
    /// `icmp_error_no_flow`.
    #[error_counter(name = "icmp_error_no_flow", description = "ICMP error for an unknown flow", severity = ERROR)]
    IcmpErrorNoFlow,
    /// `martian`.
    #[error_counter(name = "martian", description = "impossible client source", severity = ERROR)]
    Martian,
    /// `too_big_no_reply`.
    #[error_counter(name = "too_big_no_reply", description = "too big, no ICMP error allowed", severity = ERROR)]
    TooBigNoReply,
    /// Forwarded to a backend.
    #[error_counter(name = "forwarded", description = "forwarded to a backend", severity = INFO)]
    Forwarded,
    /// ICMP errors sent back to clients.
    #[error_counter(name = "icmp_replies", description = "ICMP too-big sent to client", severity = INFO)]
    Replies,
    /// Passed on to the next feature.
    #[error_counter(name = "to_host", description = "not for a VIP, passed on", severity = INFO)]
    Host,
}

/// The counter of a drop reason (same index, checked below).
const fn error_of(r: DropReason) -> LbError {
    match r {
        DropReason::Malformed => LbError::Malformed,
        DropReason::BadChecksum => LbError::BadChecksum,
        DropReason::NoVip => LbError::NoVip,
        DropReason::NoLiveBackend => LbError::NoLiveBackend,
        DropReason::TtlExpired => LbError::TtlExpired,
        DropReason::FragmentNoState => LbError::FragmentNoState,
        DropReason::TooBigNoDf => LbError::TooBigNoDf,
        DropReason::TooBigIcmpError => LbError::TooBigIcmpError,
        DropReason::NoHeadroom => LbError::NoHeadroom,
        DropReason::RewriteFailed => LbError::RewriteFailed,
        DropReason::IcmpErrorNoFlow => LbError::IcmpErrorNoFlow,
        DropReason::Martian => LbError::Martian,
        DropReason::TooBigNoReply => LbError::TooBigNoReply,
    }
}

const _: () = {
    let mut i = 0;
    while i < DropReason::COUNT {
        assert!(error_of(DropReason::ALL[i]) as usize == i);
        i += 1;
    }
};

static IP4_NODE: Ip4NodeReg = Ip4NodeReg;
static IP6_NODE: Ip6NodeReg = Ip6NodeReg;

/// The IPv4 node, `marllb-ip4`.
#[derive(Debug)]
#[vlib_node(name = "marllb-ip4", instance = IP4_NODE, format_trace = format_trace4)]
pub struct Ip4NodeReg;

/// The IPv6 node, `marllb-ip6`.
#[derive(Debug)]
#[vlib_node(name = "marllb-ip6", instance = IP6_NODE, format_trace = format_trace6)]
pub struct Ip6NodeReg;

/// A trace record of `marllb-ip4` (`show trace`): flow, verdict, backend,
/// next node.
fn format_trace4(
    _: &mut vlib::MainRef,
    _: &mut vlib::NodeRef<Ip4NodeReg>,
    t: &TraceNote,
) -> String {
    t.to_string()
}

/// A trace record of `marllb-ip6`.
fn format_trace6(
    _: &mut vlib::MainRef,
    _: &mut vlib::NodeRef<Ip6NodeReg>,
    t: &TraceNote,
) -> String {
    t.to_string()
}

macro_rules! lb_node {
    ($reg:ident, $family:expr) => {
        impl Node for $reg {
            type Vector = BufferIndex;
            type Scalar = ();
            type Aux = ();
            type NextNodes = LbNext;
            type RuntimeData = ();
            type TraceData = TraceNote;
            type Errors = LbError;
            type FeatureData = ();

            #[inline(always)]
            unsafe fn function(
                &self,
                vm: &mut vlib::MainRef,
                node: &mut vlib::NodeRuntimeRef<Self>,
                frame: &mut vlib::FrameRef<Self>,
            ) -> u16 {
                // SAFETY: called by VPP with its own vm, node and frame for a
                // node on a feature arc (the registration below).
                unsafe { dispatch($family, vm, node, frame) }
            }
        }
    };
}

lb_node!(Ip4NodeReg, NodeFamily::Ip4);
lb_node!(Ip6NodeReg, NodeFamily::Ip6);

vnet_feature_init!(
    identifier: MARLLB_IP4_FEATURE,
    arc_name: "ip4-unicast",
    node: Ip4NodeReg,
    runs_before: ["ip4-lookup"],
);

vnet_feature_init!(
    identifier: MARLLB_IP6_FEATURE,
    arc_name: "ip6-unicast",
    node: Ip6NodeReg,
    runs_before: ["ip6-lookup"],
);

/// One frame: map, process with this thread's worker, set next nodes and
/// errors, count, enqueue.
///
/// # Safety
///
/// `vm`, `node` and `frame` are VPP's for a node running on a feature arc.
#[inline(always)]
unsafe fn dispatch<N>(
    family: NodeFamily,
    vm: &mut vlib::MainRef,
    node: &mut vlib::NodeRuntimeRef<N>,
    frame: &mut vlib::FrameRef<N>,
) -> u16
where
    N: Node<Vector = BufferIndex, Errors = LbError, FeatureData = (), TraceData = TraceNote>,
{
    let from = frame.vector();
    let indices = BufferIndex::as_u32_slice(from);
    let n = indices.len().min(MAX_BATCH);
    // SAFETY: VPP's vm has a valid buffer main for the life of the process.
    let (start, data_size) = unsafe {
        let bm = (*vm.as_ptr()).buffer_main;
        (
            (*bm).buffer_mem_start as *mut u8,
            (*bm).default_data_size as usize,
        )
    };
    let mut counts = FrameCounts::default();
    // SAFETY: VPP's runtime of this node.
    let tracing = u32::from(unsafe { (*node.as_ptr()).flags }) & VLIB_NODE_FLAG_TRACE != 0;
    // Only while tracing: a record per buffer (`show trace`).
    let mut notes: Option<Box<[TraceNote; MAX_BATCH]>> = tracing.then(|| {
        Box::new(
            [TraceNote {
                verdict: TraceVerdict::Unconfigured,
                next: NEXT_FEATURE,
                ..TraceNote::default()
            }; MAX_BATCH],
        )
    });
    let indices = &indices[..n];
    let from = &from[..n];
    let done = Runtime::try_global()
        .filter(|r| r.enabled())
        .and_then(|rt| {
            // SAFETY: VPP's vm of this thread; plain reads of its dispatch
            // time stamp and clock rate, which only this thread writes.
            let (tsc, ns_per_tick) = unsafe {
                let v = vm.as_ptr();
                (
                    (*v).cpu_time_last_node_dispatch,
                    (*v).clib_time.seconds_per_clock * 1e9,
                )
            };
            rt.with_frame(usize::from(vm.thread_index()), |w, svc, macs, s| {
                let now = s.clock.now(tsc, ns_per_tick, || rt.now_ns());
                // SAFETY: the frame's buffers belong to this node until enqueued;
                // VPP's pool lays them out as `process_frame` requires.
                unsafe {
                    process_frame(
                        w,
                        svc,
                        now,
                        family,
                        FrameBuffers {
                            buffer_mem_start: start,
                            indices,
                            data_size,
                            macs,
                        },
                        &mut s.nexts,
                        &mut s.verdicts,
                        &mut counts,
                        notes.as_deref_mut().map(|a| &mut a[..]),
                    )
                };
                w.sweep_paced(svc, now, SWEEP_MAX_PER_FRAME);
                // SAFETY: the frame's buffers, set up by `process_frame` for
                // the next nodes it chose.
                unsafe {
                    finish(
                        vm,
                        node,
                        start,
                        from,
                        &mut s.nexts[..n],
                        &s.verdicts[..n],
                        &counts,
                        notes.as_deref(),
                    )
                };
            })
        });
    if done.is_none() {
        // Not processed: every buffer is passed on.
        let mut nexts = [NEXT_FEATURE; MAX_BATCH];
        counts = FrameCounts {
            host: n as u32,
            ..FrameCounts::default()
        };
        // SAFETY: the frame's buffers, untouched.
        unsafe {
            finish(
                vm,
                node,
                start,
                from,
                &mut nexts[..n],
                &[Verdict::Host; MAX_BATCH][..n],
                &counts,
                notes.as_deref(),
            )
        };
    }
    n as u16
}

/// The rest of a frame after `process_frame`: the next feature of buffers
/// passed on, the error of dropped ones, trace records, the node's
/// counters, and the enqueue to the next nodes.
///
/// # Safety
///
/// `vm` and `node` are VPP's for a node on a feature arc; `from` are the
/// frame's buffers (below `buffer_mem_start`), `nexts[i]` and `verdicts[i]`
/// buffer `i`'s next node (one of this node's, or [`NEXT_FEATURE`]) and
/// verdict, the buffer set up for it; `nexts` and `verdicts` as long as
/// `from`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn finish<N>(
    vm: &mut vlib::MainRef,
    node: &mut vlib::NodeRuntimeRef<N>,
    buffer_mem_start: *mut u8,
    from: &[BufferIndex],
    nexts: &mut [u16],
    verdicts: &[Verdict],
    counts: &FrameCounts,
    notes: Option<&[TraceNote; MAX_BATCH]>,
) where
    N: Node<Vector = BufferIndex, Errors = LbError, FeatureData = (), TraceData = TraceNote>,
{
    let indices = BufferIndex::as_u32_slice(from);
    // Buffers passed on need the arc's next feature, dropped ones their
    // error, traced ones a record; a frame of forwards (the common case)
    // needs nothing more.
    if counts.unfinished() != 0 || notes.is_some() {
        for (i, ((&bi, next), &v)) in indices
            .iter()
            .zip(nexts.iter_mut())
            .zip(verdicts)
            .enumerate()
        {
            let bp = buffer_mem_start
                .wrapping_add((bi as usize) << LOG2_CACHE_LINE)
                .cast::<vlib_buffer_t>();
            // SAFETY: a buffer of this frame, owned by this node until enqueued.
            let b = unsafe { BufferRef::<()>::from_ptr_mut(bp) };
            match v {
                Verdict::Drop(r) => b.set_error(node, error_of(r)),
                _ if *next == NEXT_FEATURE => {
                    // SAFETY: the node runs on a feature arc (registered above).
                    let (nx, ()) = unsafe { b.vnet_feature_next() };
                    *next = nx as u16;
                }
                _ => {}
            }
            if let Some(t) = notes.and_then(|a| a.get(i)) {
                if b.flags().contains(BufferFlags::IS_TRACED) {
                    let mut t = *t;
                    t.next = *next;
                    b.add_trace(vm, node).write(t);
                }
            }
        }
    }
    for (c, e) in [
        (counts.forwarded, LbError::Forwarded),
        (counts.replies, LbError::Replies),
        (counts.host, LbError::Host),
    ] {
        if c != 0 {
            node.increment_error_counter(vm, e, u64::from(c));
        }
    }
    // A frame whose buffers all go to one node (all forwarded the same way,
    // the common case) is enqueued as one run, as VPP's own nodes do; others
    // by VPP's general enqueue, which looks for the runs.
    // SAFETY: VPP filled `vlib_buffer_func_main` in at start-up and only
    // reads it afterwards.
    let single = unsafe { vlib_buffer_func_main.buffer_enqueue_to_single_next_fn };
    match (nexts.first(), single) {
        (Some(&first), Some(enqueue)) if nexts.iter().all(|&x| x == first) => {
            // SAFETY: as below; `indices` are the frame's buffers (at most
            // `MAX_BATCH`, so the count fits `u32`), all set up for `first`.
            unsafe {
                enqueue(
                    vm.as_ptr(),
                    node.as_ptr(),
                    indices.as_ptr().cast_mut(),
                    first,
                    indices.len() as u32,
                )
            }
        }
        // SAFETY: every next index is one of this node's next nodes or the
        // arc's next feature; the buffers are set up for them (see
        // `marllb_vpp::frame`).
        _ => unsafe { vm.buffer_enqueue_to_next(node, from, nexts) },
    }
}

/// Creates the plugin state.
#[vlib_init_function]
fn marllb_init(_vm: &mut BarrierHeldMainRef) -> Result<(), ErrorStack> {
    Runtime::global();
    Ok(())
}

fn cli_error(msg: impl Into<String>) -> ErrorStack {
    ErrorStack::msg(msg.into().replace('\0', " "))
}

/// Prints `text` on the CLI, line by line.
fn cli_print(vm: &BarrierHeldMainRef, text: &str) {
    for line in text.lines() {
        let Ok(c) = CString::new(line.replace('\0', " ")) else {
            continue;
        };
        // SAFETY: `vm` is the main thread's vlib_main; the format is a
        // NUL-terminated literal whose one `%s` takes the NUL-terminated line.
        unsafe { vlib_cli_output(vm.as_ptr(), c"%s".as_ptr().cast_mut(), c.as_ptr()) };
    }
}

/// Number of VPP threads (main included).
fn vpp_threads() -> usize {
    // SAFETY: VPP's global main; `vlib_mains` is null or a vppinfra vector of
    // the threads' mains, complete once VPP runs CLI commands.
    unsafe {
        let vgm = vpp_plugin::bindings::vlib_helper_get_global_main();
        VecRef::from_raw_opt((*vgm).vlib_mains.cast_const()).map_or(1, |v| v.len())
    }
}

unsafe extern "C" {
    /// vnet's interface-name parser (an `unformat_function_t`).
    fn unformat_vnet_sw_interface(input: *mut unformat_input_t, args: *mut va_list) -> uword;
}

/// Resolves an interface name with VPP's own parser.
fn sw_if_index_of(name: &str) -> Option<SwIfIndex> {
    let mut input = UnformatInput::from(name);
    let mut idx: u32 = u32::MAX;
    // SAFETY: `input` is an initialised unformat input; the parser takes the
    // vnet main and a `u32 *` from the variadic arguments, as passed.
    let ok = unsafe {
        unformat_user(
            input.as_ptr(),
            Some(unformat_vnet_sw_interface),
            vnet_get_main(),
            &raw mut idx,
        )
    };
    (ok != 0 && input.eof()).then_some(SwIfIndex::new(idx))
}

/// The hardware (MAC) address of `sw`'s hardware interface (a
/// sub-interface: its parent's), if it has a 6-byte one.
fn interface_mac(sw: SwIfIndex) -> Option<[u8; 6]> {
    let sw = u32::from(sw) as usize;
    // SAFETY: called with the barrier held (CLI), so the interface pools do
    // not move; `sw_interfaces` and `hw_interfaces` are vppinfra pools
    // (vectors), indexed within their lengths; `hw_address` is a vppinfra
    // vector or null.
    unsafe {
        let im = &(*vnet_get_main()).interface_main;
        let sws = VecRef::from_raw_opt(im.sw_interfaces.cast_const())?;
        let mut si = sws.get(sw)?;
        if si.sup_sw_if_index as usize != sw {
            si = sws.get(si.sup_sw_if_index as usize)?;
        }
        if si.type_() != vnet_sw_interface_type_t_VNET_SW_INTERFACE_TYPE_HARDWARE {
            return None;
        }
        let hws = VecRef::from_raw_opt(im.hw_interfaces.cast_const())?;
        let hi = hws.get(si.hw_if_index as usize)?;
        let addr = VecRef::from_raw_opt(hi.hw_address.cast_const())?;
        addr.get(..6)?.try_into().ok()
    }
}

fn set_feature(vm: &BarrierHeldMainRef, name: &str, on: bool) -> Result<(), ErrorStack> {
    let Some(sw) = sw_if_index_of(name) else {
        return Err(cli_error(format!("unknown interface `{name}'")));
    };
    // The interface's own MAC: the source of its L2 DSR frames unless
    // `lb rl conf mac` sets one.
    let rt = Runtime::global();
    rt.set_interface_mac(u32::from(sw), if on { interface_mac(sw) } else { None });
    // VPP adds the node to the arc once per enable: enable and disable only
    // on a change (see `Runtime::set_attached`).
    if rt.attached(u32::from(sw)) == on {
        return Ok(());
    }
    for f in [&MARLLB_IP4_FEATURE, &MARLLB_IP6_FEATURE] {
        let r = if on {
            f.enable(vm, sw, ())
        } else {
            f.disable(vm, sw)
        };
        r.map_err(|e| {
            cli_error(format!(
                "{name}: feature {}: error {}",
                if on { "enable" } else { "disable" },
                i32::from(e)
            ))
        })?;
    }
    rt.set_attached(u32::from(sw), on);
    Ok(())
}

#[vlib_cli_command(
    path = "lb rl",
    short_help = "lb rl enable|disable [<interface>] | set-vip <addr> [protocol tcp|udp] [port <n>] [encap gre4|gre6|ipip|l2dsr] [method alias|sed|maglev] [del] | set-servers <addr> [mac <mac>] [weight <w>]... | shm <name> | conf [ip4-src-address <a>] [ip6-src-address <a>] [mtu <n>] [mac <mac>] [hash-seed <n>]"
)]
fn lb_rl_command(vm: &mut BarrierHeldMainRef, input: &str) -> Result<(), ErrorStack> {
    let cmd = parse_lb(input).map_err(|e| cli_error(e.0))?;
    let rt = Runtime::global();
    rt.set_threads(vpp_threads());
    match &cmd {
        Command::Enable { interface: Some(i) } => set_feature(vm, i, true)?,
        Command::Disable { interface: Some(i) } => set_feature(vm, i, false)?,
        _ => {}
    }
    let out = rt.command(cmd).map_err(cli_error)?;
    cli_print(vm, &out);
    Ok(())
}

#[vlib_cli_command(
    path = "show lb rl",
    short_help = "show lb rl stats | flows [count <n>]"
)]
fn show_lb_rl_command(vm: &mut BarrierHeldMainRef, input: &str) -> Result<(), ErrorStack> {
    let cmd = parse_show(input).map_err(|e| cli_error(e.0))?;
    let out = Runtime::global().show(cmd);
    cli_print(vm, &out);
    Ok(())
}

/// The plugin's version string as registered (for tests and logs).
pub fn version() -> &'static str {
    // SAFETY: the registration is a static written once at compile time; only
    // its version bytes are read, which are NUL-terminated by construction.
    let v: &[c_char; 64] = unsafe { &*core::ptr::addr_of!(vlib_plugin_registration.version) };
    // SAFETY: `v` is a NUL-terminated C string inside a 64-byte array.
    unsafe { CStr::from_ptr(v.as_ptr()) }.to_str().unwrap_or("")
}
