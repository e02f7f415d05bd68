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
//!
//! The directory holds at most [`MAX_BYTES`] of entries: after each write, entries of another
//! engine (an upgraded or reconfigured broker never loads them) and then the least recently used
//! ones (a load touches its entry) are removed until the rest fit. Without the bound every
//! distinct job ever submitted would stay on disk (a Python job's entry is about 40 MB).

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Bytes of compiled entries a cache directory keeps (about 50 Python jobs, thousands of Rust
/// ones).
pub const MAX_BYTES: u64 = 2 << 30;

/// A directory of compiled components.
pub(crate) struct DiskCache {
    dir: PathBuf,
    /// The most bytes of entries kept.
    max_bytes: u64,
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
            max_bytes: MAX_BYTES,
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
        // Last use, for eviction; failing to record it only makes the entry look older.
        let _ = std::fs::File::options()
            .append(true)
            .open(&file)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
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
        if let Err(e) = self.prune() {
            tracing::warn!("cannot prune {}: {e}", self.dir.display());
        }
    }

    /// Removes entries until the rest take at most `max_bytes`: another engine's first, then
    /// the least recently used.
    fn prune(&self) -> std::io::Result<()> {
        struct Entry {
            file: PathBuf,
            bytes: u64,
            ours: bool,
            used: std::time::SystemTime,
        }
        let mut entries = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let file = e.path();
            if file.extension().is_none_or(|x| x != "cwasm") {
                continue;
            }
            let meta = e.metadata()?;
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            entries.push(Entry {
                ours: stem.ends_with(&format!("-{}", self.engine)),
                bytes: meta.len(),
                used: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                file,
            });
        }
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        entries.sort_by_key(|e| (e.ours, e.used));
        for e in entries {
            if total <= self.max_bytes {
                break;
            }
            std::fs::remove_file(&e.file)?;
            let _ = std::fs::remove_file(e.file.with_extension("mac"));
            total -= e.bytes;
        }
        Ok(())
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
    fn the_directory_keeps_at_most_its_bound_dropping_other_engines_then_the_least_used() {
        let dir = std::env::temp_dir().join(format!("sluice-disk-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let engine = Engine::default();
        let mut cache = DiskCache::open(&dir, &engine).unwrap();
        cache.max_bytes = 250;
        let entry = |name: &str, age_secs: u64| {
            let f = dir.join(format!("{name}.cwasm"));
            std::fs::write(&f, [0u8; 100]).unwrap();
            std::fs::write(f.with_extension("mac"), [0u8; 32]).unwrap();
            let at = std::time::SystemTime::now() - std::time::Duration::from_secs(age_secs);
            std::fs::File::options()
                .append(true)
                .open(&f)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        let ours = |job: &str| format!("{job}-{}", cache.engine);
        entry(&ours("old"), 300);
        entry(&ours("new"), 10);
        entry("stale-0000000000000000", 5);
        cache.prune().unwrap();
        // 300 bytes > 250: the other engine's entry goes first, however recent.
        assert!(!dir.join("stale-0000000000000000.cwasm").exists());
        assert!(dir.join(format!("{}.cwasm", ours("old"))).exists());
        entry(&ours("newest"), 1);
        cache.prune().unwrap();
        // Then the least recently used, with its MAC.
        assert!(!dir.join(format!("{}.cwasm", ours("old"))).exists());
        assert!(!dir.join(format!("{}.mac", ours("old"))).exists());
        assert!(dir.join(format!("{}.cwasm", ours("new"))).exists());
        assert!(dir.join(format!("{}.cwasm", ours("newest"))).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
