//! Frame parsing, forwarding and the translation table (issue 4).
#![cfg_attr(not(test), no_std)]
