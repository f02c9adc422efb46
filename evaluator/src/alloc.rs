//! The global allocator for processes that evaluate (feval, the daemon, benchmarks): mimalloc,
//! called through its plain `mi_malloc` entry for the common small, naturally aligned requests.
//!
//! Why it exists: evaluation allocates and frees tens of millions of small objects (thunks,
//! frames, attribute vectors). The `mimalloc` crate's allocator sends every request through
//! `mi_malloc_aligned`, whose alignment checks cost measurable time on that path. Invariant:
//! every block is mimalloc's, and a request gets at least the alignment it asks for —
//! `mi_malloc` always returns pointer-aligned (8-byte) blocks, so it serves requests with
//! `align <= 8`; larger alignments go through `mi_malloc_aligned`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc with a fast path for small alignments (see the module docs).
pub struct MiMalloc;

/// The alignment every `mi_malloc` block has (a machine word).
const MAX_NATURAL_ALIGN: usize = std::mem::size_of::<usize>();

#[inline]
fn natural(align: usize, _size: usize) -> bool {
    align <= MAX_NATURAL_ALIGN
}

// SAFETY: all blocks come from and go back to mimalloc; alignment as argued in the module docs.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls into mimalloc.
        unsafe {
            if natural(layout.align(), layout.size()) {
                libmimalloc_sys::mi_malloc(layout.size()) as *mut u8
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls into mimalloc.
        unsafe {
            if natural(layout.align(), layout.size()) {
                libmimalloc_sys::mi_zalloc(layout.size()) as *mut u8
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was allocated by mimalloc (this allocator).
        unsafe { libmimalloc_sys::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by mimalloc (this allocator).
        unsafe {
            if natural(layout.align(), new_size) {
                libmimalloc_sys::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align())
                    as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_as_requested() {
        let a = MiMalloc;
        for (size, align) in [
            (1, 1),
            (8, 8),
            (16, 16),
            (24, 8),
            (8, 16),
            (64, 64),
            (100, 32),
        ] {
            let layout = Layout::from_size_align(size, align).expect("valid layout");
            // SAFETY: non-zero sizes; every block is freed with its layout.
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                let q = a.realloc(p, layout, size * 3);
                assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                a.dealloc(q, Layout::from_size_align(size * 3, align).expect("valid"));
                let z = a.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
