//! The PV console (xen/include/public/io/console.h): our log goes into the
//! `out` ring, xenconsoled copies it to `xl console` and its log file.

use core::sync::atomic::{fence, Ordering};

/// struct xencons_interface.
#[repr(C)]
pub struct XenconsInterface {
    pub input: [u8; 1024],
    pub output: [u8; 2048],
    pub in_cons: u32,
    pub in_prod: u32,
    pub out_cons: u32,
    pub out_prod: u32,
}

const _: () = assert!(core::mem::size_of::<XenconsInterface>() == 3088);
const OUT_SIZE: u32 = 2048;

/// The producer side of the output ring. The consumer (xenconsoled) is
/// another domain: its index is read, never trusted beyond the ring size.
pub struct ConsoleRing {
    ring: *mut XenconsInterface,
}

// SAFETY: the ring is only touched through `&mut self` (callers serialise).
unsafe impl Send for ConsoleRing {}

impl ConsoleRing {
    /// # Safety
    /// `ring` must point to the console page, mapped and valid for the
    /// lifetime of the value.
    pub unsafe fn new(ring: *mut XenconsInterface) -> Self {
        ConsoleRing { ring }
    }

    fn indices(&self) -> (u32, u32) {
        // SAFETY: `ring` is valid per `new`; indices are plain u32 fields
        // shared with the backend, read volatile.
        unsafe {
            let cons = core::ptr::read_volatile(&raw const (*self.ring).out_cons);
            let prod = core::ptr::read_volatile(&raw const (*self.ring).out_prod);
            (cons, prod)
        }
    }

    /// Bytes not yet taken by the backend (0 when it has caught up). A
    /// backend reporting more than the ring holds is treated as caught up.
    pub fn pending(&self) -> u32 {
        let (cons, prod) = self.indices();
        let used = prod.wrapping_sub(cons);
        if used > OUT_SIZE { 0 } else { used }
    }

    /// Copies as much of `bytes` as fits; returns how many were taken.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let (cons, mut prod) = self.indices();
        let used = prod.wrapping_sub(cons);
        if used > OUT_SIZE {
            // Corrupt consumer index: write nothing rather than overwrite.
            return 0;
        }
        let n = bytes.len().min((OUT_SIZE - used) as usize);
        fence(Ordering::Acquire);
        for &b in &bytes[..n] {
            // SAFETY: index masked into the 2048-byte output array.
            unsafe { core::ptr::write_volatile(&raw mut (*self.ring).output[(prod % OUT_SIZE) as usize], b) };
            prod = prod.wrapping_add(1);
        }
        // Data before index (console.h follows the io/ring.h rules).
        fence(Ordering::Release);
        // SAFETY: as in `indices`.
        unsafe { core::ptr::write_volatile(&raw mut (*self.ring).out_prod, prod) };
        n
    }
}

/// Translates "\n" into "\r\n" for terminals, calling `out` per piece.
pub fn crlf(bytes: &[u8], mut out: impl FnMut(&[u8])) {
    for (i, piece) in bytes.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out(b"\r\n");
        }
        if !piece.is_empty() {
            out(piece);
        }
    }
}

#[cfg(target_os = "none")]
pub use xen_console::XenConsole;

#[cfg(target_os = "none")]
mod xen_console {
    use super::*;
    use pih_xen::{clock, events, hvm, log};

    /// The log sink on the PV console: blocks (boundedly) when the ring is
    /// full so that no line is lost while xenconsoled keeps up.
    pub struct XenConsole {
        inner: spin::Mutex<Option<(ConsoleRing, events::Port)>>,
    }

    const STALL_NS: u64 = 2_000_000_000;

    impl XenConsole {
        pub const fn new() -> Self {
            XenConsole { inner: spin::Mutex::new(None) }
        }

        /// Finds the ring through the HVM parameters and maps it.
        pub fn init(&self) -> Result<(), &'static str> {
            let pfn = hvm::get_param(hvm::PARAM_CONSOLE_PFN).map_err(|_| "no console pfn")?;
            let port = hvm::get_param(hvm::PARAM_CONSOLE_EVTCHN).map_err(|_| "no console event channel")?;
            if pfn == 0 {
                return Err("console pfn is 0");
            }
            pih_boot::paging::map_identity(pfn << 12, 4096).map_err(|_| "cannot map the console ring")?;
            // SAFETY: Xen gave us this frame for the console ring and it
            // is now identity mapped.
            let ring = unsafe { ConsoleRing::new((pfn << 12) as *mut XenconsInterface) };
            *self.inner.lock() = Some((ring, port as events::Port));
            Ok(())
        }

        fn put(ring: &mut ConsoleRing, port: events::Port, mut bytes: &[u8]) {
            let deadline = clock::system_time_ns() + STALL_NS;
            while !bytes.is_empty() {
                let n = ring.write(bytes);
                bytes = &bytes[n..];
                let _ = events::send(port);
                if !bytes.is_empty() {
                    if clock::system_time_ns() > deadline {
                        return; // backend gone: drop rather than hang
                    }
                    let _ = events::poll(&[port], clock::system_time_ns() + 10_000_000);
                    events::take_pending(port);
                }
            }
        }
    }

    impl Default for XenConsole {
        fn default() -> Self {
            Self::new()
        }
    }

    impl log::Sink for XenConsole {
        fn write(&self, bytes: &[u8]) {
            if let Some(mut g) = self.inner.try_lock() {
                if let Some((ring, port)) = g.as_mut() {
                    let port = *port;
                    crlf(bytes, |piece| Self::put(ring, port, piece));
                }
            }
        }

        fn flush(&self) {
            if let Some(g) = self.inner.try_lock() {
                if let Some((ring, port)) = g.as_ref() {
                    let deadline = clock::system_time_ns() + STALL_NS;
                    while ring.pending() > 0 && clock::system_time_ns() < deadline {
                        let _ = events::send(*port);
                        let _ = events::poll(&[*port], clock::system_time_ns() + 10_000_000);
                        events::take_pending(*port);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Box<XenconsInterface> {
        Box::new(XenconsInterface { input: [0; 1024], output: [0; 2048], in_cons: 0, in_prod: 0, out_cons: 0, out_prod: 0 })
    }

    #[test]
    fn writes_until_full_then_resumes_after_consumer() {
        let mut r = ring();
        r.out_cons = u32::MAX - 10;
        r.out_prod = u32::MAX - 10;
        let p: *mut XenconsInterface = &mut *r;
        let mut c = unsafe { ConsoleRing::new(p) };
        assert_eq!(c.write(&[7u8; 3000]), 2048);
        assert_eq!(c.pending(), 2048);
        assert_eq!(c.write(b"x"), 0);
        unsafe { (*p).out_cons = (*p).out_cons.wrapping_add(100) };
        assert_eq!(c.write(&[9u8; 300]), 100);
        let prod = unsafe { (*p).out_prod };
        assert_eq!(prod, (u32::MAX - 10).wrapping_add(2148));
        assert_eq!(unsafe { (*p).output[(prod.wrapping_sub(1) % 2048) as usize] }, 9);
    }

    #[test]
    fn corrupt_consumer_index_writes_nothing() {
        let mut r = ring();
        r.out_cons = 5000;
        let mut c = unsafe { ConsoleRing::new(&mut *r) };
        assert_eq!(c.write(b"abc"), 0);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn crlf_expands_newlines() {
        let mut out = Vec::new();
        crlf(b"a\nb\n", |p| out.extend_from_slice(p));
        assert_eq!(out, b"a\r\nb\r\n");
    }
}
