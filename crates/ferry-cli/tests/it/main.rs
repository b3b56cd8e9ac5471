//! Integration tests for the `ferry` command and for multi-process use of a
//! bucket, through real binaries and real processes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod cli;
mod crash;
mod encryption;
mod filters;
mod full_disk;
mod live;
mod multiprocess;
mod serve;
mod snapshots;
mod support;
mod sync;
