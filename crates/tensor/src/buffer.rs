//! Allocation of large result buffers.

use std::mem::MaybeUninit;

use crate::Element;

/// Buffers at least this large ask the kernel for transparent huge pages.
const HUGE_PAGE_MIN_BYTES: usize = 8 << 20;

/// A buffer of `n` elements for a kernel that writes every one of them:
/// nothing is filled in first (zero-filling a 100 MB per-sample-gradient
/// result was a whole extra pass over it). Large buffers that come from fresh,
/// lazily mapped pages fault them in on first write; on Linux they are marked
/// for transparent huge pages, which cuts those faults 512-fold (writing
/// 100 MB of per-sample gradients into new memory took 48 ms with 4 KiB pages
/// and 21 ms with 2 MiB ones on a 2-core EPYC).
pub(crate) fn for_writing<T: Element>(n: usize) -> Vec<MaybeUninit<T>> {
    let mut v: Vec<MaybeUninit<T>> = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` elements need no initialisation; the capacity is `n`.
    unsafe { v.set_len(n) };
    let bytes = n * std::mem::size_of::<T>();
    if bytes >= HUGE_PAGE_MIN_BYTES {
        advise_huge_pages(v.as_ptr() as usize, bytes);
    }
    v
}

/// The buffer of [`for_writing`] once written.
///
/// # Safety
/// Every element of `v` must have been written.
pub(crate) unsafe fn assume_init<T: Element>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the caller guarantees
    // every element is initialised; the allocation moves into the new vector.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    let first = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end > first {
        // SAFETY: [first, end) lies inside the live allocation `start..start + bytes`;
        // MADV_HUGEPAGE only changes how the kernel backs those pages, not their contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_start: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn written_buffers_keep_their_values_and_size() {
        for n in [0, 3, 5 << 20] {
            let mut v = super::for_writing::<f32>(n);
            assert_eq!(v.len(), n);
            v.iter_mut().enumerate().for_each(|(i, x)| {
                x.write(i as f32);
            });
            // SAFETY: every element was written just above.
            let v = unsafe { super::assume_init(v) };
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
    }
}
