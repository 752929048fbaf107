//! Arbitrary behaviour of the server side of the ring: the input drives both
//! the client's operations and what "xenstored" does whenever the client
//! notifies or waits (consume requests, write replies that may be well or
//! badly formed, raw bytes, arbitrary indices). The client must never panic
//! or touch memory outside the ring page (checked by the sanitizer: the page
//! is a heap allocation of exactly its size).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pih_xen::xenstore::{
    mask_idx, Header, XenStore, XenStoreEnv, XenstoreDomainInterface, XENSTORE_RING_SIZE,
};
use std::ptr::{addr_of, addr_of_mut};

struct FuzzEnv {
    ring: *mut XenstoreDomainInterface,
    data: Vec<u8>,
    pos: usize,
    now: u64,
    /// Request bytes taken off the ring, to learn the ids the client uses.
    req_buf: Vec<u8>,
    last_req_id: u32,
}

impl FuzzEnv {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let mut v = [0u8; 4];
        for b in v.iter_mut() {
            *b = self.byte()?;
        }
        Some(u32::from_le_bytes(v))
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let end = (self.pos + n).min(self.data.len());
        let v = self.data[self.pos..end].to_vec();
        self.pos = end;
        v
    }

    fn idx(&self, f: fn(*mut XenstoreDomainInterface) -> *mut u32) -> u32 {
        // SAFETY: the ring is a live allocation owned by this env.
        unsafe { f(self.ring).read_volatile() }
    }

    fn set_idx(&self, f: fn(*mut XenstoreDomainInterface) -> *mut u32, v: u32) {
        // SAFETY: as in `idx`.
        unsafe { f(self.ring).write_volatile(v) }
    }

    /// Puts bytes into the response ring at rsp_prod (whether or not the
    /// client has room: the server may be hostile) and publishes them.
    fn produce(&mut self, bytes: &[u8]) {
        let prod = self.idx(rsp_prod);
        for (i, &b) in bytes.iter().take(XENSTORE_RING_SIZE).enumerate() {
            let at = mask_idx(prod.wrapping_add(i as u32));
            // SAFETY: `at` is masked to the ring size.
            unsafe {
                addr_of_mut!((*self.ring).rsp)
                    .cast::<u8>()
                    .add(at)
                    .write_volatile(b)
            };
        }
        let n = bytes.len().min(XENSTORE_RING_SIZE) as u32;
        self.set_idx(rsp_prod, prod.wrapping_add(n));
    }

    fn consume_requests(&mut self) {
        let cons = self.idx(req_cons);
        let prod = self.idx(req_prod);
        let avail = (prod.wrapping_sub(cons) as usize).min(XENSTORE_RING_SIZE);
        for i in 0..avail {
            let at = mask_idx(cons.wrapping_add(i as u32));
            // SAFETY: `at` is masked to the ring size.
            let b = unsafe {
                addr_of!((*self.ring).req)
                    .cast::<u8>()
                    .add(at)
                    .read_volatile()
            };
            self.req_buf.push(b);
        }
        self.set_idx(req_cons, cons.wrapping_add(avail as u32));
        while let Some(h) = Header::parse(&self.req_buf) {
            let total = 16 + h.len as usize;
            if self.req_buf.len() < total {
                break;
            }
            self.last_req_id = h.req_id;
            self.req_buf.drain(..total);
        }
        if self.req_buf.len() > 8192 {
            self.req_buf.clear();
        }
    }

    fn step(&mut self) {
        let Some(op) = self.byte() else { return };
        match op % 9 {
            0 | 1 => self.consume_requests(),
            2 => {
                // A reply to the last request, of any type, short payload.
                self.consume_requests();
                let ty = u32::from(self.byte().unwrap_or(0) % 24);
                let len = usize::from(self.byte().unwrap_or(0));
                let payload = self.bytes(len);
                let h = Header {
                    msg_type: ty,
                    req_id: self.last_req_id,
                    tx_id: 0,
                    len: payload.len() as u32,
                };
                let mut m = h.to_bytes().to_vec();
                m.extend_from_slice(&payload);
                self.produce(&m);
            }
            3 => {
                // A well-formed acknowledgement or read reply.
                self.consume_requests();
                let ty = u32::from(self.byte().unwrap_or(0) % 24);
                let h = Header {
                    msg_type: ty,
                    req_id: self.last_req_id,
                    tx_id: 0,
                    len: 3,
                };
                let mut m = h.to_bytes().to_vec();
                m.extend_from_slice(b"OK\0");
                self.produce(&m);
            }
            4 => {
                let n = usize::from(self.byte().unwrap_or(0));
                let raw = self.bytes(n);
                self.produce(&raw);
            }
            5 => {
                // A watch event.
                let n = usize::from(self.byte().unwrap_or(0) % 32);
                let mut p = self.bytes(n);
                p.push(0);
                p.extend_from_slice(b"tok\0");
                let h = Header {
                    msg_type: 15,
                    req_id: 0,
                    tx_id: 0,
                    len: p.len() as u32,
                };
                let mut m = h.to_bytes().to_vec();
                m.extend_from_slice(&p);
                self.produce(&m);
            }
            6 => {
                let v = self.u32().unwrap_or(0);
                self.set_idx(rsp_prod, v);
            }
            7 => {
                let v = self.u32().unwrap_or(0);
                self.set_idx(req_cons, v);
            }
            _ => {
                let d = u32::from(self.byte().unwrap_or(0));
                let p = self.idx(rsp_prod);
                self.set_idx(rsp_prod, p.wrapping_add(d));
            }
        }
    }
}

impl Drop for FuzzEnv {
    fn drop(&mut self) {
        // SAFETY: allocated with Box::into_raw below; the client sharing it
        // is being dropped with us and never touches it on drop.
        unsafe { drop(Box::from_raw(self.ring)) };
    }
}

impl XenStoreEnv for FuzzEnv {
    fn notify(&mut self) {
        self.step();
    }
    fn wait(&mut self, deadline_ns: u64) {
        self.step();
        self.now = self.now.max(deadline_ns.min(self.now + 1_000_000));
    }
    fn now_ns(&self) -> u64 {
        self.now
    }
}

fn req_cons(r: *mut XenstoreDomainInterface) -> *mut u32 {
    // SAFETY: only called with the live ring pointer; computes a field
    // address without creating a reference.
    unsafe { addr_of_mut!((*r).req_cons) }
}
fn req_prod(r: *mut XenstoreDomainInterface) -> *mut u32 {
    // SAFETY: only called with the live ring pointer; computes a field
    // address without creating a reference.
    unsafe { addr_of_mut!((*r).req_prod) }
}
fn rsp_prod(r: *mut XenstoreDomainInterface) -> *mut u32 {
    // SAFETY: only called with the live ring pointer; computes a field
    // address without creating a reference.
    unsafe { addr_of_mut!((*r).rsp_prod) }
}
fn rsp_cons(r: *mut XenstoreDomainInterface) -> *mut u32 {
    // SAFETY: only called with the live ring pointer; computes a field
    // address without creating a reference.
    unsafe { addr_of_mut!((*r).rsp_cons) }
}

fuzz_target!(|data: &[u8]| {
    let ring = Box::into_raw(Box::new(XenstoreDomainInterface::zeroed()));
    let mut env = FuzzEnv {
        ring,
        data: data.to_vec(),
        pos: 0,
        now: 0,
        req_buf: Vec::new(),
        last_req_id: 0,
    };
    for f in [req_cons, req_prod, rsp_cons, rsp_prod] {
        let v = env.u32().unwrap_or(0);
        env.set_idx(f, v);
    }
    // SAFETY: `ring` is a live, aligned heap allocation owned by `env`,
    // which the client owns; nothing else touches it meanwhile.
    let mut xs = unsafe { XenStore::new(ring, env) };
    xs.set_timeout_ns(8_000_000);
    xs.set_watch_queue_capacity(4);
    for _ in 0..48 {
        let Some(op) = xs.env_mut().byte() else { break };
        let _ = match op % 12 {
            0 => xs.read("/a").map(drop),
            1 => xs.write("/a/b", "value").map(drop),
            2 => xs.directory("/a").map(drop),
            3 => xs.watch("/a", "tok").map(drop),
            4 => xs.unwatch("/a", "tok").map(drop),
            5 => xs.transaction_start().map(drop),
            6 => {
                let tx = xs.transaction_start();
                tx.and_then(|tx| xs.transaction_end(tx, op & 0x80 != 0))
            }
            7 => xs.pump().map(drop),
            8 => {
                let _ = xs.poll_watch();
                Ok(())
            }
            9 => xs.read_u32("/n").map(drop),
            10 => xs.write_bytes("/big", &[b'x'; 3000]).map(drop),
            _ => xs.get_domain_path(1).map(drop),
        };
        let _ = xs.has_pending_watch();
        let _ = xs.stats();
    }
});
