//! The sealed-blob decoder, in memory and streaming: any input is an
//! integrity error or (never, for random input) a clean open; no panic.
//! The input is also sealed as plaintext: it must open to itself, and with
//! one byte flipped (position and bit taken from the input) it must not.
#![no_main]

use std::io::Read;

use ferry::crypto::keyring::Keyring;
use ferry::crypto::keys::Key;
use libfuzzer_sys::fuzz_target;

fn open_streaming(keys: &Keyring, sealed: &[u8]) -> Option<Vec<u8>> {
    let mut opener = keys.blob_opener(sealed).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        match opener.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::new(&Key([7u8; 32]), ferry::crypto::names::NameFormat::V2);
    let _ = keys.open_blob(data);
    let _ = open_streaming(&keys, data);

    let sealed = keys.seal_blob(data).unwrap();
    assert_eq!(keys.open_blob(&sealed).unwrap(), data);
    assert_eq!(open_streaming(&keys, &sealed).unwrap(), data);
    let seed = data
        .iter()
        .fold(0usize, |a, &b| a.wrapping_mul(31).wrapping_add(b as usize));
    let mut bad = sealed.clone();
    let at = seed % bad.len();
    bad[at] ^= 1 << (seed % 8);
    assert!(keys.open_blob(&bad).is_err(), "flipped byte {at} opened");
    assert!(
        open_streaming(&keys, &bad).is_none(),
        "flipped byte {at} streamed"
    );
    assert!(
        keys.open_blob(&sealed[..sealed.len() - 1]).is_err(),
        "truncation opened"
    );
});
