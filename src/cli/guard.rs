//! What the process does when something ends it early: a signal, a failed
//! allocation, a panic. Each removes the outputs being staged
//! ([`secondo::output::remove_staged`]), prints one line and exits, so that no
//! case ends in an abort, a backtrace or a half-written file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, with a failed allocation turned into one line and
/// exit status 2 instead of Rust's abort (status 134).
pub struct Guarded;

// SAFETY: every method forwards to the system allocator with the caller's
// arguments; a null result never reaches the caller (the process exits).
unsafe impl GlobalAlloc for Guarded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        checked(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        checked(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        checked(unsafe { System.realloc(ptr, layout, new_size) }, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn checked(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        out_of_memory(size);
    }
    ptr
}

/// Set once the process has begun to end, so that a second failure (an
/// allocation while cleaning up) exits at once.
static ENDING: AtomicBool = AtomicBool::new(false);

#[cold]
fn out_of_memory(size: usize) -> ! {
    if !ENDING.swap(true, Ordering::SeqCst) {
        secondo::output::remove_staged();
        // Formatted on the stack: the heap just failed.
        let mut line = [0u8; 200];
        let mut cursor = std::io::Cursor::new(&mut line[..]);
        let _ = writeln!(
            cursor,
            "error: out of memory: an allocation of {:.2} GB failed; nothing was written",
            size as f64 / 1e9
        );
        let len = cursor.position() as usize;
        let _ = std::io::stderr().write_all(&line[..len]);
    }
    // SAFETY: `_exit` ends the process without running anything that could
    // allocate again.
    unsafe { libc::_exit(2) }
}

/// Installs the handlers: SIGINT, SIGTERM and SIGHUP remove staged outputs
/// and exit with 128 + the signal; a panic prints one line and exits with 2;
/// the address space is capped at what is available now, so that work beyond
/// memory fails an allocation (one line) rather than waking the kernel's OOM
/// killer. Call first thing in `main`, before any thread starts.
pub fn install() {
    limit_address_space();
    std::panic::set_hook(Box::new(|info| {
        ENDING.store(true, Ordering::SeqCst);
        secondo::output::remove_staged();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error{place}: {}; please report it",
            message.replace('\n', " ")
        );
        std::process::exit(2);
    }));
    let signals = [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ];
    if let Ok(mut pending) = signal_hook::iterator::Signals::new(signals) {
        std::thread::spawn(move || {
            if let Some(signal) = pending.forever().next() {
                if secondo::interrupt::deferred() {
                    // The job stops at its next step boundary and exits by
                    // itself; a second signal ends it here.
                    secondo::interrupt::request();
                    pending.forever().next();
                }
                ENDING.store(true, Ordering::SeqCst);
                secondo::output::remove_staged();
                let name = match signal {
                    signal_hook::consts::SIGINT => "SIGINT",
                    signal_hook::consts::SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                eprintln!("error: interrupted by {name}; nothing was written");
                std::process::exit(128 + signal);
            }
        });
    }
}

/// Caps the address space at its current size plus the memory available
/// (`secondo_tensor::memory::available`, which honours `SECONDO_MEMORY_LIMIT`).
fn limit_address_space() {
    #[cfg(target_os = "linux")]
    {
        let Some(available) = secondo::tensor::memory::available() else {
            return;
        };
        let mapped = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        // Thread stacks and allocator arenas reserve address space they do not use.
        const RESERVED: u64 = 1 << 30;
        let limit = mapped
            .saturating_mul(page)
            .saturating_add(available)
            .saturating_add(RESERVED);
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads the struct we pass; lowering the soft limit
        // cannot fail for lack of privileges.
        unsafe {
            libc::setrlimit(libc::RLIMIT_AS, &rlimit);
        }
    }
}
