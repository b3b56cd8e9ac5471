//! Encrypted names, v1 and v2: any string that decrypts is refused or
//! read without a panic, and every key-like string round-trips exactly
//! (encrypt then decrypt gives it back, at the length `encrypted_name_len`
//! says).
#![no_main]

use ferry::crypto::keys::{Key, Purpose};
use ferry::crypto::names::{decrypt_name, encrypt_name, encrypted_name_len, NameFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key([5u8; 32]).derive(Purpose::Names);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [NameFormat::V1, NameFormat::V2] {
        let _ = decrypt_name(&key, format, text);
        // Keys never hold NUL (v2 pads with it) or other control characters.
        if text.len() <= 1024 && !text.chars().any(char::is_control) {
            let enc = encrypt_name(&key, format, text).expect("encrypts");
            assert_eq!(enc.len(), encrypted_name_len(format, text));
            assert_eq!(decrypt_name(&key, format, &enc).expect("decrypts"), text);
        }
    }
});
