//! The few libc calls std does not offer, declared by hand (Linux x86_64
//! and aarch64 layouts; std already links libc).

use std::io;
use std::os::fd::RawFd;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PollFd {
    pub fd: RawFd,
    pub events: i16,
    pub revents: i16,
}

pub const POLLIN: i16 = 0x001;
pub const POLLOUT: i16 = 0x004;
pub const POLLERR: i16 = 0x008;
pub const POLLHUP: i16 = 0x010;
pub const POLLNVAL: i16 = 0x020;

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

const RLIMIT_NOFILE: i32 = 7;

extern "C" {
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
    fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
    fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
}

/// poll(2) on `fds`; returns how many have events. EINTR counts as 0.
pub fn poll_fds(fds: &mut [PollFd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
    let n = unsafe { poll(fds.as_mut_ptr(), fds.len() as u64, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// Raises the open-file limit so that at least `want` descriptors can be
/// open: the soft limit up to the hard one, and both beyond it when we
/// may (root). Returns the soft limit in effect afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let mut r = Rlimit { cur: 0, max: 0 };
    // SAFETY: plain out-parameter.
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    if r.cur >= want {
        return r.cur;
    }
    if r.max < want {
        let both = Rlimit {
            cur: want,
            max: want,
        };
        // SAFETY: plain in-parameter. Fails without CAP_SYS_RESOURCE.
        if unsafe { setrlimit(RLIMIT_NOFILE, &both) } == 0 {
            return want;
        }
    }
    let soft = Rlimit {
        cur: r.max.min(want.max(r.cur)),
        max: r.max,
    };
    // SAFETY: as above.
    if unsafe { setrlimit(RLIMIT_NOFILE, &soft) } == 0 {
        soft.cur
    } else {
        r.cur
    }
}

/// listen(2) again on a listening socket: Linux then takes the new backlog
/// (std listens with a small one; bursts of thousands of SYNs want more).
pub fn set_backlog(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: `fd` is a socket the caller owns.
    if unsafe { listen(fd, backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
