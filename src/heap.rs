//! The process heap: giving freed memory back to the system.
//!
//! glibc's allocator keeps what a thread frees in that thread's arena for reuse
//! and returns little of it: after loading a million records, about 100 MB of
//! the server's ~150 MB anonymous RSS was free memory held in arenas (measured
//! by calling `malloc_trim` on the running server; see the performance report's
//! memory section). So the binary, once at start ([`tune`]):
//! - serves allocations of `MMAP_THRESHOLD_BYTES` and more from their own
//!   mappings, unmapped when freed (by default glibc raises this threshold
//!   each time such a block is freed, until the index writer's and merges'
//!   large buffers land in arenas and stay there);
//! - and, from a thread of its own, hands free arena pages back
//!   (`malloc_trim`) whenever more than `TRIM_FREE_BYTES` sit free, checking
//!   every `TRIM_INTERVAL`.
//!
//! Only the binary calls this: a library must not tune its host's allocator.
//! Elsewhere than Linux with glibc it does nothing.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub use glibc::tune;

/// Does nothing: only glibc's allocator is tuned.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::time::Duration;

    /// Blocks this large get a mapping of their own (glibc's default starting value).
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    /// Free heap memory worth handing back.
    const TRIM_FREE_BYTES: usize = 8 * 1024 * 1024;
    /// How often the trimming thread looks.
    const TRIM_INTERVAL: Duration = Duration::from_secs(5);

    /// Sets the allocator up and starts the trimming thread. Call first thing
    /// in `main`, before any other thread starts.
    pub fn tune() {
        // SAFETY: mallopt only changes the allocator's parameters, and runs
        // before other threads allocate.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        }
        let started = std::thread::Builder::new()
            .name("engram-heap-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TRIM_INTERVAL);
                    trim_if_worth_it();
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start the heap trimming thread");
        }
    }

    /// Hands free arena pages back to the system when enough of them sit free.
    fn trim_if_worth_it() {
        // SAFETY: mallinfo2 reads the allocator's counters under its locks.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free > TRIM_FREE_BYTES {
            // SAFETY: malloc_trim releases free pages under the allocator's locks.
            unsafe {
                libc::malloc_trim(0);
            }
            tracing::debug!(free_bytes = free, "returned free heap memory");
        }
    }
}
