//! The global allocator for processes that evaluate (feval, the daemon, benchmarks): mimalloc,
//! called through its plain `mi_malloc` entry for the common small, naturally aligned requests.
//!
//! Why it exists: evaluation allocates and frees tens of millions of small objects (thunks,
//! frames, attribute vectors). The `mimalloc` crate's allocator sends every request through
//! `mi_malloc_aligned`, whose alignment checks cost measurable time on that path. Invariant:
//! every block is mimalloc's, and a request gets at least the alignment it asks for —
//! `mi_malloc` always returns pointer-aligned (8-byte) blocks, so it serves requests with
//! `align <= 8`; larger alignments go through `mi_malloc_aligned`.
//!
//! It also keeps what outlives an evaluation apart from the evaluation's own values
//! ([`long_lived`]): a thread's lowered sources, interned names and compiled regular expressions
//! are allocated from a second heap of the thread, so that tearing an evaluation down empties the
//! pages it used whole and the next evaluation allocates from fresh pages, in address order.

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

// mimalloc's first-class heaps (part of the C library linked above; the `-sys` crate declares
// them only behind a feature that pulls in another crate).
unsafe extern "C" {
    fn mi_heap_new() -> *mut c_void;
    fn mi_heap_set_default(heap: *mut c_void) -> *mut c_void;
}

thread_local! {
    /// This thread's heap for what outlives evaluations (created on first use; never deleted:
    /// mimalloc hands what it still holds to the thread's main heap when the thread exits).
    static LONG_LIVED: std::cell::Cell<*mut c_void> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Runs `f` with this thread's allocations (through [`MiMalloc`]) served from the thread's
/// long-lived heap, then goes back to the heap that served them before (also when `f` panics).
///
/// Why: an evaluation allocates millions of small blocks and frees them all at its end. If what
/// survives it (lowered trees kept in the thread's cache, interned names, compiled regular
/// expressions) were allocated among them, the survivors would keep those pages partly used, and
/// every later evaluation on the thread would allocate from their free lists, which are in the
/// order the previous evaluation was torn down: blocks scattered over many pages instead of
/// consecutive ones, so more cache and TLB misses on every allocation and on every use (a
/// module-system evaluation of nixpkgs' lib in the daemon spent 13% of its samples in `mi_malloc`
/// against 3% in a fresh process). Only allocation is redirected: a block is freed to the heap it
/// came from, whichever heap is current then.
///
/// Invariant: `f` must not keep the evaluation's values alive through what it allocates (what it
/// allocates may outlive the evaluation; that is the point). Blocks freed here go to their own
/// heap, so `f` may free anything. Without [`MiMalloc`] as the global allocator this only changes
/// which mimalloc heap nothing is allocated from.
pub fn long_lived<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(*mut c_void);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: the heap was this thread's default a moment ago and is still alive (heaps
            // are deleted only when their thread exits).
            unsafe {
                mi_heap_set_default(self.0);
            }
        }
    }
    let heap = LONG_LIVED.with(|h| {
        if h.get().is_null() {
            // SAFETY: creates a heap owned by this thread.
            h.set(unsafe { mi_heap_new() });
        }
        h.get()
    });
    if heap.is_null() {
        return f();
    }
    // SAFETY: `heap` belongs to this thread (created just above, on this thread).
    let _restore = Restore(unsafe { mi_heap_set_default(heap) });
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lived_blocks_are_ordinary_blocks() {
        let a = MiMalloc;
        let layout = Layout::from_size_align(48, 8).expect("valid layout");
        // SAFETY: blocks of `layout`, each freed once.
        unsafe {
            let kept = long_lived(|| long_lived(|| a.alloc(layout)));
            let short = a.alloc(layout);
            assert!(!kept.is_null() && !short.is_null());
            // A block of the long-lived heap is freed from outside it, and one of the default
            // heap from inside it.
            long_lived(|| a.dealloc(short, layout));
            a.dealloc(kept, layout);
        }
        // A panic inside leaves the thread's default heap as it was.
        let r = std::panic::catch_unwind(|| long_lived(|| panic!("inside")));
        assert!(r.is_err());
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }

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
