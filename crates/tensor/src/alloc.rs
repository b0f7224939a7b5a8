//! [`CachingAllocator`]: a global allocator for programs that train, which keeps large freed
//! blocks and hands them back for the next allocation of the same size.
//!
//! A training step allocates the same activation and gradient buffers every step. With the
//! system allocator, every buffer above glibc's mmap threshold (at most 32 MiB) is a fresh
//! `mmap`: the kernel zero-fills and faults in every page on first touch and unmaps it on free,
//! which on a SimCLR step over 512 images costs more system time than the arithmetic. This
//! allocator caches blocks of at least [`CachingAllocator::MIN_BLOCK`] bytes (rounded up to
//! 64 KiB) by exact rounded size, up to a byte budget, and returns the most recently freed one
//! (still warm in the cache and TLB). Small allocations go straight to the system allocator.
//!
//! Opt in from a binary:
//! ```
//! #[global_allocator]
//! static ALLOC: selfsup_tensor::alloc::CachingAllocator = selfsup_tensor::alloc::CachingAllocator::new();
//! # fn main() { let v = vec![0f32; 1 << 20]; assert_eq!(v[0], 0.0); }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

const SLOTS: usize = 256;
const ROUND: usize = 64 * 1024;

struct Cache {
    /// `(address, rounded size, align)` of free blocks, oldest first.
    blocks: [(usize, usize, usize); SLOTS],
    len: usize,
    bytes: usize,
}

/// A global allocator that reuses large freed blocks (see the module docs).
pub struct CachingAllocator {
    cache: Mutex<Cache>,
    budget: usize,
}

impl Default for CachingAllocator {
    fn default() -> Self {
        CachingAllocator::new()
    }
}

impl CachingAllocator {
    /// Blocks smaller than this go straight to the system allocator.
    pub const MIN_BLOCK: usize = 256 * 1024;

    /// A caching allocator keeping at most 4 GiB of free blocks.
    pub const fn new() -> Self {
        CachingAllocator::with_budget(4 << 30)
    }

    /// A caching allocator keeping at most `budget` bytes of free blocks.
    pub const fn with_budget(budget: usize) -> Self {
        CachingAllocator {
            cache: Mutex::new(Cache {
                blocks: [(0, 0, 0); SLOTS],
                len: 0,
                bytes: 0,
            }),
            budget,
        }
    }

    /// Bytes currently held in free cached blocks.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().map(|c| c.bytes).unwrap_or(0)
    }

    fn rounded(layout: Layout) -> Option<Layout> {
        if layout.size() < Self::MIN_BLOCK {
            return None;
        }
        let size = layout.size().checked_add(ROUND - 1)? / ROUND * ROUND;
        Layout::from_size_align(size, layout.align()).ok()
    }

    /// A cached block of exactly `l` (rounded) layout, if one is free.
    fn take(&self, l: Layout) -> Option<*mut u8> {
        let mut c = self.cache.lock().ok()?;
        let n = c.len;
        let i = (0..n)
            .rev()
            .find(|&i| c.blocks[i].1 == l.size() && c.blocks[i].2 == l.align())?;
        let (addr, size, _) = c.blocks[i];
        c.blocks.copy_within(i + 1..n, i);
        c.len -= 1;
        c.bytes -= size;
        Some(addr as *mut u8)
    }

    /// Keeps a freed block, evicting the oldest ones past the budget or slot count. Returns the
    /// blocks to release to the system (done outside the lock).
    fn put(&self, ptr: *mut u8, l: Layout) -> [(usize, usize, usize); 4] {
        let mut evicted = [(0usize, 0usize, 0usize); 4];
        let Ok(mut c) = self.cache.lock() else {
            evicted[0] = (ptr as usize, l.size(), l.align());
            return evicted;
        };
        if l.size() > self.budget {
            evicted[0] = (ptr as usize, l.size(), l.align());
            return evicted;
        }
        let mut k = 0;
        while (c.len == SLOTS || c.bytes + l.size() > self.budget) && c.len > 0 && k < evicted.len()
        {
            evicted[k] = c.blocks[0];
            c.bytes -= c.blocks[0].1;
            let n = c.len;
            c.blocks.copy_within(1..n, 0);
            c.len -= 1;
            k += 1;
        }
        if c.len < SLOTS && c.bytes + l.size() <= self.budget {
            let n = c.len;
            c.blocks[n] = (ptr as usize, l.size(), l.align());
            c.len += 1;
            c.bytes += l.size();
        } else if k < evicted.len() {
            evicted[k] = (ptr as usize, l.size(), l.align());
        } else {
            // Could not make room within four evictions: release this block directly.
            drop(c);
            // SAFETY: `ptr` was allocated by `System` with layout `l` (see `alloc`).
            unsafe { System.dealloc(ptr, l) };
        }
        evicted
    }
}

// SAFETY: every block handed out is either fresh from `System` with the rounded layout or a
// cached block that was allocated that way and freed by its owner; blocks are released to
// `System` with the same rounded layout they were allocated with.
unsafe impl GlobalAlloc for CachingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::rounded(layout) {
            None => System.alloc(layout),
            Some(l) => self.take(l).unwrap_or_else(|| System.alloc(l)),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::rounded(layout) {
            None => System.alloc_zeroed(layout),
            Some(l) => match self.take(l) {
                Some(p) => {
                    std::ptr::write_bytes(p, 0, layout.size());
                    p
                }
                None => System.alloc_zeroed(l),
            },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match Self::rounded(layout) {
            None => System.dealloc(ptr, layout),
            Some(l) => {
                for (addr, size, align) in self.put(ptr, l) {
                    if size > 0 {
                        System.dealloc(
                            addr as *mut u8,
                            Layout::from_size_align_unchecked(size, align),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_large_blocks_and_zeroes_them() {
        let a = CachingAllocator::with_budget(8 << 20);
        let l = Layout::from_size_align(1 << 20, 64).unwrap();
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, l.size());
            a.dealloc(p, l);
            assert_eq!(a.cached_bytes(), 1 << 20);
            let q = a.alloc_zeroed(l);
            assert_eq!(q, p, "the freed block comes back");
            assert!((0..l.size()).all(|i| *q.add(i) == 0));
            assert_eq!(a.cached_bytes(), 0);
            a.dealloc(q, l);
            // Over budget: the oldest block is released.
            let big = Layout::from_size_align(8 << 20, 64).unwrap();
            let r = a.alloc(big);
            a.dealloc(r, big);
            assert_eq!(a.cached_bytes(), 8 << 20);
            let r2 = a.alloc(big);
            assert_eq!(r2, r);
            a.dealloc(r2, big);
            // Small blocks are not cached.
            let s = Layout::from_size_align(1024, 8).unwrap();
            let p = a.alloc(s);
            a.dealloc(p, s);
            assert_eq!(a.cached_bytes(), 8 << 20);
        }
    }
}
