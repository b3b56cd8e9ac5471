//! The sealed-blob decoder, in memory and streaming: any input is an
//! integrity error or (never, for random input) a clean open; no panic.
#![no_main]

use std::io::Read;

use ferry::crypto::keyring::Keyring;
use ferry::crypto::keys::Key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::new(&Key([7u8; 32]));
    let _ = keys.open_blob(data);
    if let Ok(mut opener) = keys.blob_opener(data) {
        let mut buf = [0u8; 1000];
        while let Ok(n) = opener.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
});
