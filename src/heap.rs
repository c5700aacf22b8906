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
//!   (`malloc_trim`) every `TRIM_INTERVAL`, or as soon as the process's
//!   anonymous memory has grown by `TRIM_AFTER_GROWTH_BYTES`.
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
    use std::time::{Duration, Instant};

    /// Blocks this large get a mapping of their own (glibc's default starting value).
    const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
    /// Growth of the process's anonymous memory since the last trim that is
    /// worth a trim (which walks every arena's free lists under its lock:
    /// 2 to 50 ms with a million records loaded).
    const TRIM_AFTER_GROWTH_BYTES: u64 = 16 * 1024 * 1024;
    /// How often the trimming thread looks (reading `/proc/self/statm`).
    const CHECK_INTERVAL: Duration = Duration::from_secs(1);
    /// The longest between two trims.
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
            .spawn(trim_as_memory_grows);
        if let Err(e) = started {
            tracing::warn!(error = %e, "could not start the heap trimming thread");
        }
    }

    /// Hands free arena pages back to the system every `TRIM_INTERVAL`, and
    /// sooner when anonymous memory has grown by `TRIM_AFTER_GROWTH_BYTES`
    /// since the last trim. (Memory freed after a trim does not show as
    /// growth, and glibc's own count of free bytes cannot say when either: a
    /// trimmed page still counts as free. Hence the clock.)
    fn trim_as_memory_grows() {
        let Some(mut floor) = anonymous_bytes() else {
            return;
        };
        let mut last = Instant::now();
        loop {
            std::thread::sleep(CHECK_INTERVAL);
            let Some(now) = anonymous_bytes() else {
                return;
            };
            let grew = now >= floor.saturating_add(TRIM_AFTER_GROWTH_BYTES);
            if !grew && last.elapsed() < TRIM_INTERVAL {
                floor = floor.min(now);
                continue;
            }
            let started = Instant::now();
            // SAFETY: malloc_trim releases free pages under the allocator's locks.
            unsafe {
                libc::malloc_trim(0);
            }
            last = Instant::now();
            floor = anonymous_bytes().unwrap_or(now);
            tracing::debug!(
                before = now,
                after = floor,
                micros = started.elapsed().as_micros(),
                "returned free heap memory"
            );
        }
    }

    /// Resident memory not backed by files: resident minus shared pages, from
    /// `/proc/self/statm`.
    fn anonymous_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let mut pages = statm.split_whitespace().skip(1).map(|p| p.parse::<u64>());
        let (resident, shared) = (pages.next()?.ok()?, pages.next()?.ok()?);
        // SAFETY: sysconf only reads a system constant.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        Some(resident.saturating_sub(shared) * page)
    }
}
