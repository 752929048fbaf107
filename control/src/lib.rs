//! Management-plane logic of pih-bridge, independent of Xen: configuration
//! parsing, the management API (HTTP, authentication, rules, JSON) and,
//! later, persistence.
#![cfg_attr(not(test), no_std)]

pub mod api;
pub mod auth;
pub mod config;
pub mod http;
pub mod json;
pub mod rules;
