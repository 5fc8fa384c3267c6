//! Cache prefetch hints, for a fan-out that goes through many connections in a row.
//!
//! This is the one module of `tether` that allows `unsafe`: the x86-64 prefetch instruction
//! is only reachable through `core::arch`, whose functions need `unsafe` to call. A prefetch
//! reads nothing and writes nothing a program can see: it asks the CPU to bring a cache
//! line closer, and the CPU may ignore it. It never faults, whatever the address (Intel SDM
//! vol. 2, PREFETCHh: "does not affect program behavior"; a prefetch of an unmapped address
//! is dropped), so it cannot break memory safety; only its timing is observable.
#![allow(unsafe_code)]

/// Asks the CPU to bring `value`'s memory (at most [`MAX_LINES`] cache lines of it) into
/// its cache, without waiting for it: a loop over many objects scattered in memory (a
/// fan-out over its subscribers) calls it a few objects ahead, so that their cache misses
/// overlap. Only a hint; it changes nothing else. A no-op on other architectures than x86-64.
#[inline]
pub fn value<T: ?Sized>(value: &T) {
    lines((value as *const T).cast(), std::mem::size_of_val(value));
}

/// Asks for the cache lines of `len` bytes from `start` to be brought in (at most
/// [`MAX_LINES`] lines); a no-op on other architectures.
#[inline]
pub(crate) fn lines(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let lines = len.div_ceil(LINE).min(MAX_LINES);
        for i in 0..lines {
            // `wrapping_add`: the address is only a hint; it is never dereferenced.
            let p = start.wrapping_add(i * LINE);
            // SAFETY: `_mm_prefetch` needs the `sse` feature, which every x86-64 CPU has
            // (it is in the x86-64 baseline this crate is built for); and it performs no
            // memory access a program can observe, so any pointer value is sound.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// A cache line's size on the CPUs this is tuned for.
const LINE: usize = 64;

/// The most lines one call asks for.
pub const MAX_LINES: usize = 16;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// A hint changes nothing a program can see, whatever the address: dangling, null,
        /// unaligned, unmapped, or the last bytes of the address space.
        #[test]
        fn a_prefetch_of_any_address_changes_nothing(addr in any::<usize>(), len in 0usize..4096, data in proptest::collection::vec(any::<u8>(), 1..256)) {
            let before = data.clone();
            super::lines(addr as *const u8, len);
            super::lines(data.as_ptr(), data.len());
            super::value(&data[..]);
            prop_assert_eq!(data, before);
        }
    }
}
