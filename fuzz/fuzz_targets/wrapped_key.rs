//! The key-file and wrapped-key decoders: parse, then unwrap when the KDF
//! cost is small enough to run per input; no panic.
#![no_main]

use ferry::crypto::keyring::KeyFile;
use ferry::crypto::keys::WrappedKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = WrappedKey::from_json(data) {
        let p = w.kdf_params();
        if p.m_kib <= 64 && p.t <= 2 && p.p <= 2 {
            let _ = w.unwrap_key(b"passphrase");
        }
    }
    if let Ok(f) = KeyFile::from_json(data) {
        let p = f.wrapped.kdf_params();
        if p.m_kib <= 64 && p.t <= 2 && p.p <= 2 {
            let _ = f.unlock(b"passphrase");
        }
    }
});
