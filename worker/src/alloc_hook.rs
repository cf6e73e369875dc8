//! The process's `malloc`, `calloc` and `realloc`: glibc's own, told when they find no memory.
//!
//! The executable defines these symbols, so the dynamic linker binds every library's calls to
//! them, the functions' libraries included (a definition in the executable comes first in the
//! global scope). Each forwards to glibc's implementation under its exported `__libc_` name
//! and, on a failure, calls `limits::allocation_failed`, which ends the attempt of a confined
//! process that ran out of memory (see `squall_worker::limits`). `free` and the aligned
//! allocators stay glibc's; memory from either side is glibc's alike.

use squall_worker::limits::allocation_failed;
use std::ffi::c_void;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
}

/// `malloc(3)`.
///
/// # Safety
/// As glibc's `malloc`.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    // SAFETY: the caller keeps `malloc`'s contract, which `__libc_malloc` shares.
    let ptr = unsafe { __libc_malloc(size) };
    if ptr.is_null() && size > 0 {
        allocation_failed();
    }
    ptr
}

/// `calloc(3)`.
///
/// # Safety
/// As glibc's `calloc`.
#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    // SAFETY: the caller keeps `calloc`'s contract, which `__libc_calloc` shares.
    let ptr = unsafe { __libc_calloc(count, size) };
    if ptr.is_null() && count > 0 && size > 0 {
        allocation_failed();
    }
    ptr
}

/// `realloc(3)`.
///
/// # Safety
/// As glibc's `realloc`.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: the caller keeps `realloc`'s contract, which `__libc_realloc` shares.
    let new = unsafe { __libc_realloc(ptr, size) };
    if new.is_null() && size > 0 {
        allocation_failed();
    }
    new
}
