//! The gateway driven by the AWS SDK for Rust.
