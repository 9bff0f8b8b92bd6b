//! The C helpers `vpp-plugin` expects from its `vlib_wrapper.c`, for builds
//! without the VPP headers (`vpp-plugin` then compiles no C). Each is the
//! Rust transcription of the VPP 26.06 macro or inline function it wraps,
//! over the pre-generated bindings' layouts. With the headers installed this
//! module is not compiled and the crate's C versions are linked instead.
//!
//! Only the helpers the plugin reaches are provided; the ELF test checks that
//! the shared object leaves no `vlib_helper_*` symbol undefined.
#![allow(non_snake_case)]

use vpp_plugin::bindings::{
    unformat_input_t, uword, vec_free_not_inline, vlib_cli_command_t, vlib_cli_main_t,
    vlib_global_main, vlib_global_main_t, vlib_node_registration_t, vnet_feature_main_t,
    vnet_feature_registration_t,
};

unsafe extern "C" {
    /// vppinfra's refill of an unformat input (exported by libvppinfra).
    fn _unformat_fill_input(i: *mut unformat_input_t) -> uword;
}

const UNFORMAT_END_OF_INPUT: uword = !0;

/// `&vlib_global_main`.
#[unsafe(no_mangle)]
pub extern "C" fn vlib_helper_get_global_main() -> *mut vlib_global_main_t {
    core::ptr::addr_of_mut!(vlib_global_main)
}

/// `VLIB_REMOVE_FROM_LINKED_LIST (vgm->node_registrations, node, next_registration)`.
///
/// # Safety
///
/// `vgm` is VPP's global main and the list is not being modified concurrently
/// (VPP calls destructors at exit, single-threaded).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vlib_helper_remove_node_from_registrations(
    vgm: *mut vlib_global_main_t,
    node: *mut vlib_node_registration_t,
) {
    // SAFETY: `vgm` is valid (contract); the list links valid registrations.
    unsafe {
        let mut p: *mut *mut vlib_node_registration_t = &raw mut (*vgm).node_registrations;
        while !(*p).is_null() {
            if *p == node {
                *p = (*node).next_registration;
                return;
            }
            p = &raw mut (**p).next_registration;
        }
    }
}

/// `VLIB_REMOVE_FROM_LINKED_LIST (cm->cli_command_registrations, x, next_cli_command)`.
///
/// # Safety
///
/// As for [`vlib_helper_remove_node_from_registrations`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vlib_helper_remove_cli_command(
    cm: *mut vlib_cli_main_t,
    x: *mut vlib_cli_command_t,
) {
    // SAFETY: `cm` is valid (contract); the list links valid registrations.
    unsafe {
        let mut p: *mut *mut vlib_cli_command_t = &raw mut (*cm).cli_command_registrations;
        while !(*p).is_null() {
            if *p == x {
                *p = (*x).next_cli_command;
                return;
            }
            p = &raw mut (**p).next_cli_command;
        }
    }
}

/// `VLIB_REMOVE_FROM_LINKED_LIST (fm->next_feature, r, next)`.
///
/// # Safety
///
/// As for [`vlib_helper_remove_node_from_registrations`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vlib_helper_remove_feature_from_registrations(
    fm: *mut vnet_feature_main_t,
    r: *mut vnet_feature_registration_t,
) {
    // SAFETY: `fm` is valid (contract); the list links valid registrations.
    unsafe {
        let mut p: *mut *mut vnet_feature_registration_t = &raw mut (*fm).next_feature;
        while !(*p).is_null() {
            if *p == r {
                *p = (*r).next;
                return;
            }
            p = &raw mut (**p).next;
        }
    }
}

/// Length of a vppinfra vector (`vec_len`): the `u32` just in front of it.
///
/// # Safety
///
/// `v` is null or a vppinfra vector.
unsafe fn vec_len(v: *const u8) -> usize {
    if v.is_null() {
        return 0;
    }
    // SAFETY: a vppinfra vector is preceded by its `vec_header_t`, whose last
    // 8 bytes start with the `u32` length (VPP 26.06 `vec_bootstrap.h`).
    unsafe { v.sub(8).cast::<u32>().read_unaligned() as usize }
}

/// `unformat_get_input`.
///
/// # Safety
///
/// `input` is a valid, initialised `unformat_input_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vlib_helper_unformat_get_input(input: *mut unformat_input_t) -> uword {
    // SAFETY: `input` is valid (contract); `buffer` is a vppinfra vector of
    // `vec_len` bytes, refilled by VPP's own `_unformat_fill_input`.
    unsafe {
        let mut i = (*input).index;
        if i as usize >= vec_len((*input).buffer) {
            (*input).index = _unformat_fill_input(input);
            i = (*input).index;
            if i == UNFORMAT_END_OF_INPUT || i as usize >= vec_len((*input).buffer) {
                return UNFORMAT_END_OF_INPUT;
            }
        }
        (*input).index = i + 1;
        uword::from(*(*input).buffer.add(i as usize))
    }
}

/// `unformat_check_input`.
///
/// # Safety
///
/// As for [`vlib_helper_unformat_get_input`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vlib_helper_unformat_check_input(input: *mut unformat_input_t) -> uword {
    // SAFETY: as above.
    unsafe {
        let i = (*input).index;
        if i as usize >= vec_len((*input).buffer) {
            (*input).index = _unformat_fill_input(input);
            return (*input).index;
        }
        i
    }
}

/// `unformat_free`: frees the input's buffer vector and clears it.
///
/// # Safety
///
/// As for [`vlib_helper_unformat_get_input`]; the buffer is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vlib_helper_unformat_free(input: *mut unformat_input_t) {
    // SAFETY: `free` is the input's own destructor or none; `buffer` and
    // `buffer_marks` are null or vppinfra vectors owned by the input.
    unsafe {
        if let Some(f) = (*input).free {
            f(input);
        }
        if !(*input).buffer.is_null() {
            vec_free_not_inline((*input).buffer.cast());
        }
        if !(*input).buffer_marks.is_null() {
            vec_free_not_inline((*input).buffer_marks.cast());
        }
        core::ptr::write_bytes(input, 0, 1);
    }
}
