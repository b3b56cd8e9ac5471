//! The local store: content-addressed blobs, object bodies, the SQLite
//! index (every SQL statement of the bucket's own tables lives under here),
//! the rows' content bookkeeping, the sync records applied to rows, and the
//! single writer thread that commits them.

pub(crate) mod blobs;
pub mod body;
pub(crate) mod index;
pub mod list;
pub(crate) mod record;
pub(crate) mod rows;
pub(crate) mod writer;
