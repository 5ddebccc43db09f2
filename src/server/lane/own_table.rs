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
//! gain from it can be measured by building both. Without the feature, [`take_own`] leaves
//! the thread on the process's table and hands out no [`OwnTable`].
//!
//! The contract the types hold: closing numbers in the caller's table
//! ([`close_handed_over`]) takes an [`OwnTable`], which only [`take_own`] makes, on the
//! thread that took its own table, and which is spent by the closing.

use std::os::fd::RawFd;

/// Proof that a lane thread has a descriptor table of its own, holding its own copies of
/// the descriptors it took along: only [`take_own`] makes one, and closing the caller's
/// copies ([`close_handed_over`]) spends it.
#[derive(Debug)]
pub(crate) struct OwnTable {
    /// Private: no other code can claim a table was taken.
    _taken: (),
}

/// Gives the calling thread its own descriptor table holding only `keep`, the standard
/// streams and the wake-up descriptors (see the module docs). `None` where that is not
/// possible (no `/proc`; a sandbox that forbids `unshare`) or not built in (the
/// `own-table` feature): the thread then goes on sharing the process's table.
pub(crate) fn take_own(keep: &[RawFd]) -> Option<OwnTable> {
    #[cfg(feature = "own-table")]
    {
        linux::take_own(keep).then_some(OwnTable { _taken: () })
    }
    #[cfg(not(feature = "own-table"))]
    {
        let _ = keep;
        None
    }
}

/// Closes `fds` in the calling thread's table: the caller's copies of what it handed to
/// the thread whose [`OwnTable`] this is. Only for numbers whose owners moved to that
/// thread: in this table nothing owns them any more.
pub(crate) fn close_handed_over(fds: &[RawFd], taken: OwnTable) {
    let OwnTable { _taken: () } = taken;
    for &fd in fds {
        // SAFETY: `taken` proves the thread holding these descriptors' owners has its own
        // table with its own copies; the caller handed those owners over (by value) to
        // it, so here the numbers are orphans that nothing reads, writes or closes.
        unsafe {
            libc::close(fd);
        }
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
        // SAFETY: unshare(CLONE_FILES) touches no memory; it gives this thread a copy of
        // the descriptor table, which the rest of this function cuts down.
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
                        // SAFETY: this copy of the number belongs to no object on this
                        // thread (its owner lives on another thread, with its own copy).
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
        // SAFETY: sigset_t is plain data that sigfillset/sigdelset initialise; the mask
        // is changed for the calling thread only.
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

#[cfg(all(test, feature = "own-table"))]
mod tests {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, RawFd};
    use std::time::Duration;

    use super::take_own;

    /// Whether `fd` is open in the calling thread's table.
    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD reads the descriptor's flags and touches no memory.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    /// Runs `take_own(keep)` on a thread of its own, then `check` on that thread.
    fn on_own_table<T: Send + 'static>(
        keep: Vec<RawFd>,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> (bool, T) {
        std::thread::spawn(move || (take_own(&keep).is_some(), check()))
            .join()
            .unwrap_or_else(|_| panic!("the thread with its own table panicked"))
    }

    #[test]
    fn the_thread_keeps_what_it_was_given_and_none_of_the_other_sockets() {
        let given = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let other = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let (given_fd, other_fd) = (given.as_raw_fd(), other.as_raw_fd());
        let (owned, (given_open, other_open, stderr_open)) =
            on_own_table(vec![given_fd], move || {
                (is_open(given_fd), is_open(other_fd), is_open(2))
            });
        assert!(owned, "unshare and /proc are available here");
        assert!(given_open, "the descriptor it was given stays open");
        assert!(stderr_open, "the standard streams stay open");
        assert!(!other_open, "another thread's socket is not in its table");
        assert!(is_open(other_fd), "the process's table is untouched");
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
            let _ = ready_tx.send(take_own(&[]).is_some());
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
        let (owned, blocked) = on_own_table(Vec::new(), || {
            // SAFETY: sigset_t is plain data filled by pthread_sigmask.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
                [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGSEGV]
                    .map(|signal| libc::sigismember(&set, signal) == 1)
            }
        });
        assert!(owned);
        assert_eq!(blocked, [true, true, true, false]);
    }
}

#[cfg(all(test, not(feature = "own-table")))]
mod tests_without_the_feature {
    use super::take_own;

    #[test]
    fn a_default_build_leaves_every_thread_on_the_process_table() {
        let taken = std::thread::spawn(|| take_own(&[]).is_some())
            .join()
            .unwrap_or_else(|_| panic!("the thread panicked"));
        assert!(!taken, "no own table without the own-table feature");
    }
}
