//! Randomness for keys, salts and nonce seeds: straight from the OS
//! (`getrandom`: the `getrandom(2)` system call on Linux, the platform's
//! CSPRNG elsewhere), never from a user-space generator whose state lives
//! in this process (`rand`'s thread RNG is one: seeded once, then expanded
//! in memory, where a fork or a memory disclosure would repeat or reveal
//! it). Every file of `crypto/` draws through here; a test keeps it so.

use super::CryptoError;

/// Fills `buf` from the OS RNG.
pub fn fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

/// `N` bytes from the OS RNG.
pub fn bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}
