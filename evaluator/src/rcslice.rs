//! A reference-counted slice behind a thin (one-word) pointer.
//!
//! `Rc<[T]>` is a fat pointer (address + length), which made every `Value` three words although
//! all other variants fit in two. [`RcSlice`] keeps the length in the allocation instead, next to
//! the reference count, so a list value is one word and `Value` is two. Like `Rc`, it is neither
//! `Send` nor `Sync`. Invariant: the allocation is a [`Header`] followed by exactly `len`
//! initialised elements, and it lives exactly as long as `strong > 0`.

use std::alloc::Layout;
use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;

/// What precedes the elements in the allocation.
#[repr(C)]
struct Header {
    strong: Cell<usize>,
    len: usize,
}

/// A shared, immutable slice of `T` (see module docs).
pub struct RcSlice<T> {
    ptr: NonNull<Header>,
    _owns: PhantomData<T>,
}

impl<T> RcSlice<T> {
    /// The layout of an allocation with `len` elements, and the offset of the first element.
    fn layout(len: usize) -> (Layout, usize) {
        Layout::new::<Header>()
            .extend(Layout::array::<T>(len).expect("a slice that exists in memory fits a layout"))
            .expect("a slice that exists in memory fits a layout")
    }

    /// Allocates room for `len` elements and fills it from `items`, which must yield exactly
    /// `len` of them.
    fn from_exact_iter(len: usize, items: impl Iterator<Item = T>) -> RcSlice<T> {
        let (layout, offset) = Self::layout(len);
        // SAFETY: the layout has a non-zero size (it holds the header).
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw as *mut Header) else {
            std::alloc::handle_alloc_error(layout)
        };
        // The header says `len: 0` until every element is written, so a panicking iterator
        // leaks the allocation instead of dropping uninitialised elements.
        // SAFETY: `ptr` is a fresh allocation big enough for the header.
        unsafe {
            ptr.as_ptr().write(Header {
                strong: Cell::new(1),
                len: 0,
            })
        };
        let mut written = 0;
        // SAFETY: the elements start `offset` bytes into the allocation.
        let first = unsafe { raw.add(offset) as *mut T };
        for item in items.take(len) {
            // SAFETY: `written < len`, so the slot is inside the allocation.
            unsafe { first.add(written).write(item) };
            written += 1;
        }
        assert_eq!(
            written, len,
            "RcSlice: the iterator yielded fewer items than announced"
        );
        // SAFETY: all `len` elements are initialised now.
        unsafe { (*ptr.as_ptr()).len = len };
        RcSlice {
            ptr,
            _owns: PhantomData,
        }
    }

    /// An empty slice.
    pub fn empty() -> RcSlice<T> {
        Self::from_exact_iter(0, std::iter::empty())
    }

    /// Whether both point to the same allocation.
    #[inline]
    pub fn ptr_eq(a: &RcSlice<T>, b: &RcSlice<T>) -> bool {
        a.ptr == b.ptr
    }

    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: the header lives as long as any handle (invariant).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> From<Vec<T>> for RcSlice<T> {
    fn from(v: Vec<T>) -> RcSlice<T> {
        let len = v.len();
        Self::from_exact_iter(len, v.into_iter())
    }
}

impl<T: Clone> From<&[T]> for RcSlice<T> {
    fn from(v: &[T]) -> RcSlice<T> {
        Self::from_exact_iter(v.len(), v.iter().cloned())
    }
}

impl<T, const N: usize> From<[T; N]> for RcSlice<T> {
    fn from(v: [T; N]) -> RcSlice<T> {
        Self::from_exact_iter(N, v.into_iter())
    }
}

impl<T> FromIterator<T> for RcSlice<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> RcSlice<T> {
        let iter = iter.into_iter();
        match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Self::from_exact_iter(lo, iter),
            _ => Self::from(iter.collect::<Vec<T>>()),
        }
    }
}

impl<T> std::ops::Deref for RcSlice<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        let len = self.header().len;
        let (_, offset) = Self::layout(0);
        // SAFETY: `len` initialised elements start `offset` bytes into the allocation.
        unsafe {
            std::slice::from_raw_parts(
                (self.ptr.as_ptr() as *const u8).add(offset) as *const T,
                len,
            )
        }
    }
}

impl<T> Clone for RcSlice<T> {
    #[inline]
    fn clone(&self) -> RcSlice<T> {
        let h = self.header();
        // Like `Rc`: overflowing the count would be unsound; it cannot happen without
        // `mem::forget` loops, so abort rather than wrap.
        let n = h.strong.get().wrapping_add(1);
        if n == 0 {
            std::process::abort();
        }
        h.strong.set(n);
        RcSlice {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> Drop for RcSlice<T> {
    #[inline]
    fn drop(&mut self) {
        let n = self.header().strong.get() - 1;
        self.header().strong.set(n);
        if n == 0 {
            self.drop_slow();
        }
    }
}

impl<T> RcSlice<T> {
    #[inline(never)]
    fn drop_slow(&mut self) {
        let len = self.header().len;
        let (layout, offset) = Self::layout(len);
        // SAFETY: this was the last handle: the `len` elements are initialised and nobody can
        // see them any more; the allocation was made with `layout`.
        unsafe {
            let first = (self.ptr.as_ptr() as *mut u8).add(offset) as *mut T;
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(first, len));
            std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, layout);
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for RcSlice<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> Default for RcSlice<T> {
    fn default() -> RcSlice<T> {
        RcSlice::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::RcSlice;
    use std::rc::Rc;

    #[test]
    fn shares_and_frees() {
        let item = Rc::new(5);
        let a: RcSlice<Rc<i32>> = RcSlice::from(vec![item.clone(), item.clone()]);
        assert_eq!(Rc::strong_count(&item), 3);
        let b = a.clone();
        assert!(RcSlice::ptr_eq(&a, &b));
        assert_eq!(b.len(), 2);
        drop(a);
        assert_eq!(Rc::strong_count(&item), 3);
        drop(b);
        assert_eq!(Rc::strong_count(&item), 1);
        let e: RcSlice<Rc<i32>> = RcSlice::empty();
        assert!(e.is_empty());
        let c: RcSlice<i32> = (0..4).collect();
        assert_eq!(&*c, &[0, 1, 2, 3]);
        let d: RcSlice<i32> = (0..10).filter(|x| x % 2 == 0).collect();
        assert_eq!(&*d, &[0, 2, 4, 6, 8]);
        assert_eq!(std::mem::size_of::<RcSlice<i32>>(), 8);
    }
}
