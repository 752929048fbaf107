//! Feeds arbitrary bytes (as `&str` when they are UTF-8) to the command-line
//! parser: it must never panic, every error must be one printable line, and
//! every accepted configuration must satisfy the documented invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pih_control::config::{parse, Role, MAX_FLOWS, MAX_RULES, MIN_FLOWS, MIN_RULES};

fuzz_target!(|data: &[u8]| {
    let Ok(cmdline) = core::str::from_utf8(data) else {
        return;
    };
    match parse(cmdline) {
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("config: "));
            assert!(line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
        }
        Ok(c) => {
            assert!(c.ext.contains(c.gw) && c.gw != c.ext.addr);
            assert!(!c.ext.overlaps(&c.int));
            assert!(!c.ext.overlaps(&c.mgmt));
            assert!(!c.int.overlaps(&c.mgmt));
            assert!((MIN_FLOWS..=MAX_FLOWS).contains(&c.flows));
            assert!((MIN_RULES..=MAX_RULES).contains(&c.rules));
            assert!(c.port != 0);
            assert!(!c.auth || c.key.is_some());
            if let Some(irmin) = &c.irmin {
                assert!(c.mgmt.contains(*irmin.addr.ip()));
                assert!(*irmin.addr.ip() != c.mgmt.addr);
            }
            for role in Role::ALL {
                assert_eq!(c.roles.role_of(c.roles.devid(role)), Some(role));
            }
            // Neither summary may reveal the secret.
            let shown = format!("{c}\n{c:?}");
            if let Some(key) = &c.key {
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                assert!(!shown.contains(&hex));
            }
        }
    }
});
