//! The remote envelope and encrypted-name decoders; no panic.
#![no_main]

use ferry::crypto::keyring::Keyring;
use ferry::crypto::keys::Key;
use ferry::remote::encrypted::open_envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::new(&Key([9u8; 32]), ferry::crypto::names::NameFormat::V2);
    let _ = open_envelope(&keys, "some/key", data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keys.decrypt_name(text);
    }
});
