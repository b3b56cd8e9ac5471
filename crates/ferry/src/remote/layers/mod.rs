//! Layers: remotes wrapped around remotes, each built on the forwarding
//! base ([`crate::remote::layer::Layer`]) and changing only what it must.

pub mod emulated;
pub mod encrypted;
pub mod fault;
pub mod retry;
