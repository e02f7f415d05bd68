//! Compiled components kept on disk, so that a big job (a Python job is an 18 MB component,
//! seconds to compile) is compiled once, not at every broker start.
//!
//! Each entry is the engine's serialized compiled form of one job, named by the BLAKE3 hash of
//! the job's bytes and the engine's compatibility hash (wasmtime version and configuration: a broker
//! built or configured differently never loads another's entry), beside a MAC: keyed BLAKE3 over
//! the name and the bytes under a 32-byte key kept in the directory (`key`, mode 0600, created on
//! first use). Loading a serialized component runs machine code without checking it, so an entry
//! is loaded only when its MAC verifies: a file corrupted on disk, or swapped by someone who can
//! write the directory but not read the key, is compiled afresh instead. Writes go to a temporary
//! file renamed into place, so a crash leaves no half-written entry.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components.
pub(crate) struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
    /// The engine's compatibility hash, hex (the part of each entry's name that is not the job's).
    engine: String,
}

impl DiskCache {
    /// Opens (creating if needed) the cache in `dir` for `engine`.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("key");
        let key = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k).map_err(std::io::Error::other)?;
                write_private(&key_path, &k)?;
                k.to_vec()
            }
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        Ok(Self {
            dir: dir.to_path_buf(),
            key: key.try_into().expect("32 bytes"),
            engine: format!("{:016x}", std::hash::Hasher::finish(&h)),
        })
    }

    fn paths(&self, wasm_hash: &[u8; 32]) -> (String, PathBuf, PathBuf) {
        let name = format!("{}-{}", hex::encode(wasm_hash), self.engine);
        let file = self.dir.join(format!("{name}.cwasm"));
        let mac = self.dir.join(format!("{name}.mac"));
        (name, file, mac)
    }

    /// The compiled component of the job whose bytes hash to `wasm_hash`, if an entry exists
    /// and its MAC verifies.
    // The one `unsafe` in the runtime: loading machine code the engine compiled earlier.
    #[allow(unsafe_code)]
    pub(crate) fn get(&self, engine: &Engine, wasm_hash: &[u8; 32]) -> Option<Component> {
        let (name, file, mac_path) = self.paths(wasm_hash);
        let stored: [u8; 32] = std::fs::read(&mac_path).ok()?.try_into().ok()?;
        let tag = mac_file(&self.key, name.as_bytes(), &file).ok()?;
        // `blake3::Hash` compares in constant time.
        if tag != blake3::Hash::from_bytes(stored) {
            tracing::warn!("ignoring {}: its MAC does not verify", file.display());
            return None;
        }
        // SAFETY: the file holds what `Component::serialize` wrote for this engine
        // configuration (the name carries its compatibility hash, which wasmtime checks again):
        // the MAC, under a key only this cache holds, shows it is unchanged since. The file is
        // mapped, not copied; the directory is writable by the broker's user alone (it sits in
        // the data directory beside the database and the signing key), so nobody else can swap
        // it between the check and the mapping.
        unsafe { Component::deserialize_file(engine, &file) }.ok()
    }

    /// Keeps `component`'s compiled form for the job whose bytes hash to `wasm_hash`. A
    /// failure is logged: the cache is an optimisation.
    pub(crate) fn put(&self, wasm_hash: &[u8; 32], component: &Component) {
        let (name, file, mac_path) = self.paths(wasm_hash);
        let write = || -> Result<(), Box<dyn std::error::Error>> {
            let bytes = component.serialize().map_err(|e| e.to_string())?;
            let tag = mac(&self.key, name.as_bytes(), &bytes);
            // Unique temporary names: two threads may keep the same job at once.
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
            let suffix = hex::encode(nonce);
            let tmp = file.with_extension(format!("cwasm-{suffix}.tmp"));
            write_private(&tmp, &bytes)?;
            std::fs::rename(&tmp, &file)?;
            let tmp = mac_path.with_extension(format!("mac-{suffix}.tmp"));
            std::fs::write(&tmp, tag.as_bytes())?;
            std::fs::rename(&tmp, &mac_path)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(
                "cannot keep the compiled job in {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// The MAC of an entry: BLAKE3 in keyed mode over `name`, a newline and `msg`.
fn mac(key: &[u8; 32], name: &[u8], msg: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(name).update(b"\n").update(msg);
    h.finalize()
}

/// [`mac`] of `name` and the bytes of `file`, read in chunks (no copy of the whole file).
fn mac_file(key: &[u8; 32], name: &[u8], file: &Path) -> std::io::Result<blake3::Hash> {
    use std::io::Read;
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(name).update(b"\n");
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_depends_on_the_key_the_name_and_every_byte() {
        let key = [7u8; 32];
        let a = mac(&key, b"name", b"bytes");
        assert_ne!(a, mac(&key, b"name", b"bytez"));
        assert_ne!(a, mac(&key, b"namf", b"bytes"));
        assert_ne!(a, mac(&[8u8; 32], b"name", b"bytes"));
        assert_eq!(a, mac(&key, b"name", b"bytes"));
        let f = std::env::temp_dir().join(format!("sluice-mac-{}", std::process::id()));
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        std::fs::write(&f, &big).unwrap();
        assert_eq!(
            mac_file(&key, b"name", &f).unwrap(),
            mac(&key, b"name", &big)
        );
        std::fs::remove_file(&f).unwrap();
    }
}
