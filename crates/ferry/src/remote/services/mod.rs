//! Services: the object stores ferry talks to, one client each.

pub mod azure;
pub mod folder;
pub mod gcs;
mod http;
pub mod memory;
pub mod s3;
pub mod signer;
pub mod webdav;
