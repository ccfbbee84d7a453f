//! `Value`: a value as the working state holds it, a shared byte string behind a one-word
//! pointer.
//!
//! Shared, so that the dirty set and a checkpoint's capture hold the very value the table
//! holds instead of a copy of it; a later write of the key gives the table a new value and
//! leaves the captured one alone (copy on write). While nothing else holds it, a write of the
//! same length overwrites it in place ([`Value::get_mut`]).
//!
//! `Arc<[u8]>` would do, but it is a fat pointer: 16 bytes in every slot of every map and
//! capture, where the value's length can live beside its reference count in the allocation
//! instead. With a one-word pointer and a 24-byte key (`key::INLINE_LEN`) a table slot is 32
//! bytes instead of 48, and a whole-state capture a third smaller: at the standard workload
//! (1M keys of 16 + 100 bytes) the peak RSS of `cairn bench` went from 320 to 263 MB.
//!
//! Layout of the allocation: [`Header`] (reference count, then length, one word each), then
//! the bytes; the same as `Arc<[u8]>`'s minus its weak count, so the allocation is no larger.
//!
//! # Safety argument
//! - A `Value` always points to a live allocation made by [`Value::new`] with
//!   `layout(len)`, whose header was initialised and whose `len` bytes were copied in before
//!   the pointer escaped; `len` never changes.
//! - `refs` counts the `Value`s pointing at it. `clone` increments it (Relaxed: a new
//!   reference can only be made from an existing one, which keeps the allocation alive);
//!   `drop` decrements it with Release, and the thread that takes it to zero issues an
//!   Acquire fence before freeing, so every other owner's last use happens before the free
//!   (the protocol of `std::sync::Arc`).
//! - The bytes are only written through [`Value::get_mut`], which needs `&mut` to a `Value`
//!   whose count is 1: no other `Value` exists to read them, and none can be made while the
//!   `&mut` borrow lasts. Its Acquire load pairs with the Release decrements of owners that
//!   are gone, so their reads happen before the write.
//! - The bytes are plain `u8`s, so sharing them between threads is sound (`Send + Sync`).
//!
//! The module's tests run under Miri: `cargo +nightly miri test -p cairn --lib state::value`.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicUsize, Ordering};

#[repr(C)]
struct Header {
    refs: AtomicUsize,
    len: usize,
}

/// Where the bytes start: right after the header, which needs no padding before a `u8`.
const DATA_OFFSET: usize = std::mem::size_of::<Header>();

/// The allocation holding a header and `len` bytes. Values come in through the table's API
/// and chunk decoding, both bounded by `format::MAX_VALUE_LEN`, so the size cannot come near
/// `isize::MAX`; were it to, this panics as a `Vec` of that size would.
fn layout(len: usize) -> Layout {
    match DATA_OFFSET.checked_add(len).map(|size| Layout::from_size_align(size, std::mem::align_of::<Header>())) {
        Some(Ok(layout)) => layout,
        _ => panic!("a value of {len} bytes exceeds the address space"),
    }
}

/// A reference-counted byte string, one pointer wide. Immutable while shared.
pub(crate) struct Value {
    ptr: NonNull<Header>,
}

// SAFETY: a `Value` is a shared reference to bytes and an atomic count, like `Arc<[u8]>`;
// see the module's safety argument.
unsafe impl Send for Value {}
// SAFETY: as above; `&Value` only reads the bytes and touches the count atomically.
unsafe impl Sync for Value {}

const _: () = assert!(std::mem::size_of::<Value>() == 8 && std::mem::size_of::<Option<Value>>() == 8);

impl Value {
    /// A new value holding a copy of `bytes`.
    pub(crate) fn new(bytes: &[u8]) -> Value {
        let layout = layout(bytes.len());
        // SAFETY: `layout` is never zero-sized (it holds the header).
        let raw = unsafe { alloc(layout) }.cast::<Header>();
        let Some(ptr) = NonNull::new(raw) else { handle_alloc_error(layout) };
        // SAFETY: `raw` is a fresh allocation of `layout`: a header, then `bytes.len()` bytes
        // at `DATA_OFFSET`, which `bytes` (another allocation) cannot overlap.
        unsafe {
            raw.write(Header { refs: AtomicUsize::new(1), len: bytes.len() });
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), raw.cast::<u8>().add(DATA_OFFSET), bytes.len());
        }
        Value { ptr }
    }

    fn refs(&self) -> &AtomicUsize {
        // SAFETY: the allocation is live while `self` is (module safety argument).
        unsafe { &(*self.ptr.as_ptr()).refs }
    }

    fn data(&self) -> (*mut u8, usize) {
        let raw = self.ptr.as_ptr();
        // SAFETY: live allocation; `len` is initialised and never written after `new`.
        unsafe { (raw.cast::<u8>().add(DATA_OFFSET), (*raw).len) }
    }

    /// The bytes, writable, if this is the only reference to them (as `Arc::get_mut`).
    pub(crate) fn get_mut(this: &mut Value) -> Option<&mut [u8]> {
        if this.refs().load(Ordering::Acquire) != 1 {
            return None;
        }
        let (data, len) = this.data();
        // SAFETY: the count is 1 and we hold the only `Value` exclusively, so nothing else
        // reads or writes these bytes for the borrow's life (module safety argument).
        Some(unsafe { std::slice::from_raw_parts_mut(data, len) })
    }
}

impl std::ops::Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let (data, len) = self.data();
        // SAFETY: `len` initialised bytes at `data`, not written while shared.
        unsafe { std::slice::from_raw_parts(data, len) }
    }
}

impl Clone for Value {
    fn clone(&self) -> Value {
        let before = self.refs().fetch_add(1, Ordering::Relaxed);
        // As `Arc`: a count this high means clones are being leaked; wrapping would free
        // the bytes under their owners.
        if before > isize::MAX as usize {
            std::process::abort();
        }
        Value { ptr: self.ptr }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        if self.refs().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        let (_, len) = self.data();
        // SAFETY: this was the last reference; the allocation was made with `layout(len)`.
        unsafe { dealloc(self.ptr.as_ptr().cast::<u8>(), layout(len)) }
    }
}

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Value {
        Value::new(bytes)
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Value {
        Value::new(&bytes)
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        **self == **other
    }
}

impl Eq for Value {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_holds_its_bytes_and_is_written_in_place_only_while_alone() {
        for bytes in [&b""[..], b"x", &[7u8; 100], &[0xa5; 4097]] {
            let mut v = Value::from(bytes);
            assert_eq!(&*v, bytes);
            assert_eq!(v.len(), bytes.len());
            let shared = v.clone();
            assert!(Value::get_mut(&mut v).is_none(), "written while shared");
            drop(shared);
            let Some(buf) = Value::get_mut(&mut v) else { panic!("not writable once alone again") };
            if let Some(first) = buf.first_mut() {
                *first ^= 0xff;
            }
            assert_eq!(v.len(), bytes.len());
            assert_eq!(v.first().map(|b| b ^ 0xff), bytes.first().copied());
            assert_eq!(v.get(1..), bytes.get(1..));
        }
        assert_eq!(Value::from(vec![1, 2, 3]), Value::from(&[1u8, 2, 3][..]));
        assert_eq!(format!("{:?}", Value::from(&b"ab"[..])), "[97, 98]");
    }

    #[test]
    fn clones_dropped_on_other_threads_free_the_bytes_once() {
        // Under Miri this checks the count's orderings and that the last owner, whichever
        // thread it is on, frees exactly once (a leak or a double free fails the run).
        let values: Vec<Value> = (0u8..8).map(|i| Value::from(&[i; 33][..])).collect();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let mine: Vec<Value> = values.iter().map(Value::clone).collect();
                std::thread::spawn(move || mine.iter().map(|v| usize::from(v[32])).sum::<usize>())
            })
            .collect();
        let mut values = values;
        // Overwrite in place once the threads are done with their clones.
        for t in threads {
            assert_eq!(t.join().ok(), Some((0..8).sum()));
        }
        for (i, v) in values.iter_mut().enumerate() {
            let Some(buf) = Value::get_mut(v) else { panic!("a thread kept its clone") };
            buf.fill(i as u8 + 1);
        }
        assert!(values.iter().enumerate().all(|(i, v)| v.iter().all(|&b| usize::from(b) == i + 1)));
    }
}
