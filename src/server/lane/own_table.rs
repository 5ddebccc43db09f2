//! A descriptor table of its own for a lane shard's thread (Linux), as a process of its
//! own would have.
//!
//! Why: in a process whose threads share one table, every system call on a descriptor
//! takes and drops a reference on its file (two atomic operations that a process with one
//! thread skips), and every `accept` and `close` takes the table's lock, which all shards
//! would contend for. What that costs echo is measured in `bench/RESULTS.md` (the design
//! choices table).
//!
//! `unshare(CLONE_FILES)` gives the thread a copy of the table. The copy is then cut down
//! to what the thread may use, so that it keeps no other thread's socket, pipe or file
//! open after that thread closed it:
//!
//! * the descriptors it was given (its listener and its epoll set) and the standard
//!   streams (stderr for warnings);
//! * the runtime's wake-up descriptors (eventfds and epoll sets, "anonymous inodes"):
//!   waking a task from this thread (a freed `--max-conns` slot, shutdown on an error)
//!   writes to the runtime's eventfd by its number, so that number must stay valid.
//!
//! Everything else is closed in the copy. Signals are blocked on the thread first: a
//! handler that ran here would write to the signal pipe by a number this table no
//! longer has. The rule that remains for the thread's code: use no descriptor that
//! another thread opens after the thread started (there is none today: its events go to
//! the writer thread through a channel).
//!
//! Opt-in: built only with the `own-table` Cargo feature (`cargo build --release
//! --features own-table`), so that a default build makes no `unshare` call and the lane's
//! gain from it can be measured by building both. Without the feature the thread stays
//! on the process's table, and the types below work the same way.
//!
//! The contract is about who owns which descriptor, and the types hold it:
//!
//! * Only what was handed over moves through the thread's table. The caller puts the
//!   owners of the thread's descriptors (its listener, its epoll set) in a [`Handover`],
//!   by value; the numbers kept in the thread's copy, and the caller's copies closed
//!   afterwards, are read from those owners, never given as bare numbers.
//! * The owners stay on the thread. [`Handover::take_own`] gives them back inside a
//!   [`ThreadBound`], which is not `Send`: neither they nor what they hold (the lane's
//!   connections) can move to another thread, whose table has other files under those
//!   numbers. A connection is outside that binding only between `accept` and its
//!   adoption by the lane, inside the shard's acceptor (`lane_shard`), which hands it
//!   to the lane or closes it on the thread; that step is kept by the module, not by a
//!   type.
//! * The caller's copies are closed once, and only once the thread has its own table:
//!   [`CallerCopies`] is made only by a successful [`Handover::take_own`] and spent by
//!   [`CallerCopies::close`]. Until then no owner in the caller's table holds those
//!   numbers (the owners moved) and nothing closes them, so no other file can have
//!   taken them. The caller closes them on a thread that shares the process's table
//!   (the runtime's blocking pool; see `lane_shard::LaneThread`).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::fd::RawFd;

/// Values that own descriptors and say which: what a lane thread takes along.
pub(crate) trait Descriptors {
    /// The numbers of the descriptors this value owns.
    fn descriptors(&self) -> Vec<RawFd>;
}

/// The owners of a lane thread's descriptors, on their way to the thread, with the
/// numbers read from them.
#[derive(Debug)]
pub(crate) struct Handover<T> {
    /// The listener and epoll set (or whatever the thread serves with).
    owners: T,
    /// Their descriptors' numbers, read from `owners` when the handover was made.
    fds: Vec<RawFd>,
}

/// A value that lives on the lane thread that took its own table: not `Send`, so it
/// cannot leave (see the module docs). Reached through `Deref`; never unwrapped.
#[derive(Debug)]
pub(crate) struct ThreadBound<T> {
    /// The value.
    value: T,
    /// Not `Send` (nor `Sync`): a raw pointer type is neither.
    _on_this_thread: PhantomData<*const ()>,
}

/// The caller's copies of the descriptors a lane thread took into a table of its own:
/// made only when the thread has one, closed once ([`CallerCopies::close`]).
#[derive(Debug)]
pub(crate) struct CallerCopies {
    /// The numbers, as read from the owners handed over.
    fds: Vec<RawFd>,
}

impl<T: Descriptors> Handover<T> {
    /// Hands `owners` over to the thread that will serve with them.
    pub(crate) fn new(owners: T) -> Handover<T> {
        let fds = owners.descriptors();
        Handover { owners, fds }
    }

    /// On the thread that serves with the owners: gives it its own descriptor table
    /// holding only the handed-over descriptors, the standard streams and the wake-up
    /// descriptors (see the module docs), where that is possible and built in. Returns
    /// the owners, bound to this thread, and the caller's copies to close when the
    /// table was taken (`None`: the thread goes on sharing the process's table, where
    /// the owners close their own descriptors).
    pub(crate) fn take_own(self) -> (ThreadBound<T>, Option<CallerCopies>) {
        let Handover { owners, fds } = self;
        let copies = own_table(&fds).then_some(CallerCopies { fds });
        let bound = ThreadBound {
            value: owners,
            _on_this_thread: PhantomData,
        };
        (bound, copies)
    }
}

impl<T> Deref for ThreadBound<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for ThreadBound<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl CallerCopies {
    /// Closes the caller's copies. Call it on a thread that shares the process's table.
    pub(crate) fn close(self) {
        for fd in self.fds {
            // SAFETY: no safe API closes a descriptor by number, and only a number, not
            // an owner, is left in this table. Each number was read from an owner that
            // was moved (by value, inside the `Handover`) to the lane thread, and a
            // `CallerCopies` exists only once that thread holds its own copy in a table
            // of its own; so in this table nothing owns, reads or closes the number,
            // and nothing has reused it (it stayed open here until now). It is spent
            // here, so the number is closed once.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// Gives the calling thread its own table holding only `keep` and what the module docs
/// list; whether it did.
fn own_table(keep: &[RawFd]) -> bool {
    #[cfg(feature = "own-table")]
    {
        linux::take_own(keep)
    }
    #[cfg(not(feature = "own-table"))]
    {
        let _ = keep;
        false
    }
}

#[cfg(feature = "own-table")]
mod linux {
    use std::io;
    use std::os::fd::RawFd;
    use std::path::Path;

    /// Where the calling thread's own table is listed.
    const OWN_FDS: &str = "/proc/thread-self/fd";

    pub(super) fn take_own(keep: &[RawFd]) -> bool {
        // Without the listing, the copy could not be cut down: stay shared.
        if listed_fds().is_err() {
            return false;
        }
        block_async_signals();
        // SAFETY: no safe API exists (std has none; rustix's `unshare_unsafe` is unsafe
        // for this very reason). The call touches no memory; what it changes is which
        // file each number names on this thread. From here on this thread may use only
        // the descriptors it owns in its copy, and they may not leave it: the owners
        // handed over come back bound to this thread (`ThreadBound`, not `Send`), the
        // copies of every other thread's descriptors are closed below before any lane
        // code runs, and signal handlers (which write to another thread's descriptor by
        // number) are blocked above.
        if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
            tracing::debug!(
                "the server thread shares the process's descriptor table: {}",
                io::Error::last_os_error()
            );
            return false;
        }
        match listed_fds() {
            Ok(fds) => {
                for fd in fds {
                    if !keep.contains(&fd) && fd > 2 && !is_wake_up_fd(fd) {
                        // SAFETY: no safe API closes a number nothing on this thread
                        // owns. The owners on this thread are the ones handed over,
                        // whose numbers are in `keep`; every other number's owner lives
                        // on another thread and uses the process's table, where its
                        // file stays open. Closing this copy ends no owner's file.
                        unsafe {
                            libc::close(fd);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(
                "the server thread keeps copies of other threads' descriptors ({OWN_FDS}: {e})"
            ),
        }
        true
    }

    /// The numbers open in the calling thread's table. One of them was the listing's
    /// own descriptor, closed again by the time this returns: closing it once more does
    /// nothing, and nothing else opens a descriptor on this thread meanwhile.
    fn listed_fds() -> io::Result<Vec<RawFd>> {
        Ok(std::fs::read_dir(OWN_FDS)?
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect())
    }

    /// An eventfd, epoll set, timerfd or signalfd: how the runtime wakes its threads.
    fn is_wake_up_fd(fd: RawFd) -> bool {
        std::fs::read_link(Path::new(OWN_FDS).join(fd.to_string()))
            .is_ok_and(|target| target.to_string_lossy().starts_with("anon_inode:"))
    }

    /// Blocks every signal that another thread can take on this one's behalf (all but
    /// the faults, which are the thread's own).
    fn block_async_signals() {
        // SAFETY: no safe API sets a thread's signal mask (std has none, and rustix's
        // is for libc-free runtimes). sigset_t is plain data that sigfillset/sigdelset
        // initialise; the mask is changed for the calling thread only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            for fault in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGTRAP,
                libc::SIGABRT,
            ] {
                libc::sigdelset(&mut set, fault);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod test_support {
    use std::net::TcpListener;
    use std::os::fd::{AsRawFd, RawFd};

    use super::Descriptors;

    /// Listeners handed over to a test's thread.
    pub(super) struct Given(pub Vec<TcpListener>);

    impl Descriptors for Given {
        fn descriptors(&self) -> Vec<RawFd> {
            self.0.iter().map(AsRawFd::as_raw_fd).collect()
        }
    }
}

#[cfg(all(test, feature = "own-table"))]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, RawFd};
    use std::time::Duration;

    use super::Handover;
    use super::test_support::Given;

    /// Whether `fd` is open in the calling thread's table.
    fn is_open(fd: RawFd) -> bool {
        std::fs::symlink_metadata(format!("/proc/thread-self/fd/{fd}")).is_ok()
    }

    /// The calling thread's blocked signals, from `/proc`.
    fn blocked_signals() -> u64 {
        let status =
            std::fs::read_to_string("/proc/thread-self/status").unwrap_or_else(|e| panic!("{e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("SigBlk:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no SigBlk in {status}"))
    }

    /// Hands `given` to a thread of its own, which takes its own table and runs `check`
    /// there; gives back whether it had one, and `check`'s answer. The caller's copies
    /// are closed, as the lane's caller does.
    fn on_own_table<T: Send + 'static>(
        given: Given,
        check: impl FnOnce(&Given) -> T + Send + 'static,
    ) -> (bool, T) {
        let handover = Handover::new(given);
        let (copies, checked) = std::thread::spawn(move || {
            let (bound, copies) = handover.take_own();
            (copies, check(&bound))
        })
        .join()
        .unwrap_or_else(|_| panic!("the thread with its own table panicked"));
        let owned = copies.is_some();
        if let Some(copies) = copies {
            copies.close();
        }
        (owned, checked)
    }

    #[test]
    fn the_thread_keeps_what_it_was_given_and_none_of_the_other_sockets() {
        let given = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let other = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let (given_fd, other_fd) = (given.as_raw_fd(), other.as_raw_fd());
        let (owned, (given_open, other_open, stderr_open)) =
            on_own_table(Given(vec![given]), move |_| {
                (is_open(given_fd), is_open(other_fd), is_open(2))
            });
        assert!(owned, "unshare and /proc are available here");
        assert!(given_open, "the descriptor it was given stays open");
        assert!(stderr_open, "the standard streams stay open");
        assert!(!other_open, "another thread's socket is not in its table");
        assert!(is_open(other_fd), "the process's table is untouched");
    }

    #[test]
    fn a_listener_handed_over_serves_on_after_the_caller_closes_its_copy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let handover = Handover::new(Given(vec![listener]));
        let (copies_tx, copies_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            let (bound, copies) = handover.take_own();
            let _ = copies_tx.send(copies);
            // Blocks until the client below connects. The connection exists only in
            // this thread's table, so it is closed here, not sent back.
            bound.0[0].accept().map(drop)
        });
        let copies = copies_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("unshare and /proc are available here"));
        copies.close();
        let mut client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        server
            .join()
            .unwrap_or_else(|_| panic!("the thread panicked"))
            .unwrap_or_else(|e| panic!("the thread's listener was closed with the copy: {e}"));
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap_or_else(|e| panic!("{e}")), 0);
    }

    #[test]
    fn a_socket_another_thread_closes_is_closed_for_its_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let (served, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        // The thread holds on to its table while the socket is closed here.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let (_bound, copies) = Handover::new(Given(Vec::new())).take_own();
            let _ = ready_tx.send(copies.is_some());
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
        });
        let owned = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(owned);
        drop(served);
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 8];
        let read = client.read(&mut buf);
        let _ = done_tx.send(());
        let _ = holder.join();
        assert_eq!(
            read.unwrap_or_else(|e| panic!("no end of stream while the thread lives: {e}")),
            0,
            "the client sees our close although the thread's copy was made before it"
        );
    }

    #[test]
    fn signals_are_left_to_the_other_threads() {
        let (owned, blocked) = on_own_table(Given(Vec::new()), |_| {
            let mask = blocked_signals();
            [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGSEGV]
                .map(|signal| mask & (1 << (signal - 1)) != 0)
        });
        assert!(owned);
        assert_eq!(blocked, [true, true, true, false]);
    }
}

#[cfg(all(test, not(feature = "own-table")))]
mod tests_without_the_feature {
    use super::Handover;
    use super::test_support::Given;

    #[test]
    fn a_default_build_leaves_every_thread_on_the_process_table() {
        let taken = std::thread::spawn(|| {
            let (_bound, copies) = Handover::new(Given(Vec::new())).take_own();
            copies.is_some()
        })
        .join()
        .unwrap_or_else(|_| panic!("the thread panicked"));
        assert!(!taken, "no own table without the own-table feature");
    }
}
