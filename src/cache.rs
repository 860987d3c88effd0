//! The compilation cache: compiled models (whole artifacts) and single kernels' machine code,
//! keyed by blake3 content hashes, in process memory and then on disk.
//!
//! Rules:
//! - A key covers everything the result depends on (see [`KeyBuilder`] and `build.rs`); an entry
//!   is only ever looked up by the hash of its inputs, so a stale entry cannot be found.
//! - On disk, entries live under `<dir>/v1/{models,kernels,manifests}/<2 hex>/<64 hex>`. Every
//!   write goes to a temporary file in the same folder and is renamed into place, so readers
//!   (other processes compiling the same model) see a whole entry or none.
//! - Every entry carries a checksum (artifacts their own blake3 header, kernels and manifests a
//!   blake3 prefix). An entry that fails it is reported as a warning, deleted and rebuilt; its
//!   content is never used.
//! - The cache only deletes its own entries (and `clean` only files under its `v1` folder).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A content hash.
pub type Key = [u8; 32];

/// Hex of a key.
pub fn hex(key: &Key) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds the parts of a key, each length-prefixed so that no two sequences of parts collide.
#[derive(Debug, Default)]
pub struct KeyBuilder(blake3::Hasher);

impl KeyBuilder {
    pub fn new(domain: &str) -> KeyBuilder {
        let mut k = KeyBuilder(blake3::Hasher::new());
        k.part(domain.as_bytes());
        k
    }

    pub fn part(&mut self, bytes: &[u8]) -> &mut KeyBuilder {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut KeyBuilder {
        self.part(s.as_bytes())
    }

    pub fn finish(&self) -> Key {
        *self.0.finalize().as_bytes()
    }
}

/// Kinds of entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Whole compiled models (`.tcm` artifacts).
    Model,
    /// One kernel's machine code.
    Kernel,
    /// Which files a source read and the model key they gave (looked up before parsing).
    Manifest,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Model, Kind::Kernel, Kind::Manifest];

    fn folder(self) -> &'static str {
        match self {
            Kind::Model => "models",
            Kind::Kernel => "kernels",
            Kind::Manifest => "manifests",
        }
    }
}

/// Where an entry was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Memory,
    Disk,
}

/// Entries kept by this process, shared by every [`Cache`] value.
static MEMORY: Mutex<Option<Entries>> = Mutex::new(None);

type Entries = HashMap<(Kind, Key), Arc<Blob>>;

fn memory<T>(f: impl FnOnce(&mut Entries) -> T) -> T {
    let mut guard = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Counts and bytes per kind, as `triton cache stats` prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub dir: PathBuf,
    pub entries: Vec<(Kind, usize, u64)>,
}

/// Checks an entry's bytes: `Err(why)` when it is corrupted.
pub type Verify = fn(&[u8]) -> Result<(), String>;

/// The cache of one compilation: memory, then (unless disabled) a folder.
#[derive(Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
    use_memory: bool,
    /// Problems met (corrupted entries deleted, unwritable folder), for the caller to print.
    warnings: Mutex<Vec<String>>,
}

/// Version folder under the cache folder: bumped when the layout of entries changes.
const LAYOUT: &str = "v1";

impl Cache {
    /// No caching at all (`--no-cache`).
    pub fn disabled() -> Cache {
        Cache { dir: None, use_memory: false, warnings: Mutex::default() }
    }

    /// Memory and the folder `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: Some(dir.into()), use_memory: true, warnings: Mutex::default() }
    }

    /// The folder `dir` only, not this process's memory: every lookup sees what a new process
    /// would (benchmarks of cold and warm compiles).
    pub fn disk_only(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: Some(dir.into()), use_memory: false, warnings: Mutex::default() }
    }

    /// Memory only.
    pub fn memory_only() -> Cache {
        Cache { dir: None, use_memory: true, warnings: Mutex::default() }
    }

    /// `$TRITON_CACHE_DIR`, else the platform's cache folder (`~/.cache/triton` on Linux).
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("TRITON_CACHE_DIR").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(d));
        }
        directories::ProjectDirs::from("", "", "triton").map(|p| p.cache_dir().to_path_buf())
    }

    pub fn enabled(&self) -> bool {
        self.use_memory || self.dir.is_some()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Warnings gathered so far (emptied).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn warn(&self, w: String) {
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }

    fn path(&self, kind: Kind, key: &Key) -> Option<PathBuf> {
        let h = hex(key);
        self.dir.as_ref().map(|d| d.join(LAYOUT).join(kind.folder()).join(&h[..2]).join(h))
    }

    /// The entry for `key`, checked by `verify`: from memory, else from disk (then kept in
    /// memory). A corrupted disk entry is deleted with a warning and reported as a miss.
    pub fn get(&self, kind: Kind, key: &Key, verify: Verify) -> Option<(Arc<Blob>, Level)> {
        if self.use_memory
            && let Some(v) = memory(|m| m.get(&(kind, *key)).cloned())
        {
            return Some((v, Level::Memory));
        }
        let path = self.path(kind, key)?;
        let bytes = match read_file(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.warn(format!("cannot read cache entry `{}`: {e}; rebuilding", path.display()));
                return None;
            }
        };
        if let Err(why) = verify(&bytes) {
            self.warn(format!("corrupted cache entry `{}` ({why}); deleted, rebuilding", path.display()));
            // Another process may have replaced it with a good entry meanwhile: delete only
            // what we read.
            if read_file(&path).is_ok_and(|now| *now == *bytes) {
                let _ = fs::remove_file(&path);
            }
            return None;
        }
        let bytes = Arc::new(bytes);
        if self.use_memory {
            memory(|m| m.insert((kind, *key), Arc::clone(&bytes)));
        }
        Some((bytes, Level::Disk))
    }

    /// Stores an entry in memory and on disk (atomically). Failing to write is a warning: the
    /// compilation itself succeeded.
    pub fn put(&self, kind: Kind, key: &Key, bytes: Arc<Blob>) {
        if let Some(path) = self.path(kind, key)
            && let Err(e) = write_atomic(&path, &bytes)
        {
            self.warn(format!("cannot write cache entry `{}`: {e}", path.display()));
        }
        if self.use_memory {
            memory(|m| m.insert((kind, *key), bytes));
        }
    }

    /// Entries on disk, per kind.
    pub fn stats(&self) -> Result<Stats, String> {
        let dir = self.dir.clone().ok_or("the cache is disabled")?;
        let mut entries = Vec::new();
        for kind in Kind::ALL {
            let (mut n, mut bytes) = (0, 0);
            for f in entry_files(&dir.join(LAYOUT).join(kind.folder()))? {
                n += 1;
                bytes += f.1;
            }
            entries.push((kind, n, bytes));
        }
        Ok(Stats { dir, entries })
    }

    /// Deletes every entry on disk (and in memory); returns how many files and bytes went.
    pub fn clean(&self) -> Result<(usize, u64), String> {
        memory(HashMap::clear);
        let Some(dir) = &self.dir else { return Ok((0, 0)) };
        let (mut n, mut bytes) = (0, 0);
        for kind in Kind::ALL {
            for (path, len) in entry_files(&dir.join(LAYOUT).join(kind.folder()))? {
                fs::remove_file(&path).map_err(|e| format!("cannot delete `{}`: {e}", path.display()))?;
                n += 1;
                bytes += len;
            }
        }
        Ok((n, bytes))
    }
}

/// Files (path, length) in the two-level folder of one kind; a missing folder is empty.
fn entry_files(root: &Path) -> Result<Vec<(PathBuf, u64)>, String> {
    let mut out = Vec::new();
    let list = |p: &Path| match fs::read_dir(p) {
        Ok(rd) => Ok(Some(rd)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot list `{}`: {e}", p.display())),
    };
    let Some(shards) = list(root)? else { return Ok(out) };
    for shard in shards.flatten() {
        let Some(files) = list(&shard.path())? else { continue };
        for f in files.flatten() {
            let meta = f.metadata().map_err(|e| format!("cannot stat `{}`: {e}", f.path().display()))?;
            if meta.is_file() {
                out.push((f.path(), meta.len()));
            }
        }
    }
    Ok(out)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    // A new file gets the usual mode (0666 less the umask), a replaced one keeps its own;
    // tempfile's default (0600) would hide a user's report or artifact from other users.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_or(0o666, |m| m.permissions().mode() & 0o7777);
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    // No fsync: a crash may leave a torn entry, which its checksum catches (then rebuilt).
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Whether the file at `path` holds exactly `bytes` (false when it cannot be read).
pub fn same_contents(path: &Path, bytes: &[u8]) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64)
        && read_file(path).is_ok_and(|held| *held == *bytes)
}

/// An entry's bytes, read into memory. Never memory-mapped: a file cut short by another
/// program while mapped would crash the reader (SIGBUS), and `same_contents` reads users'
/// artifacts, which the cache's own rename discipline does not protect (the runtime's artifact
/// loader reads for the same reason).
#[derive(Debug, PartialEq)]
pub struct Blob(Vec<u8>);

impl std::ops::Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(v)
    }
}

/// The bytes of a file.
pub fn read_file(path: &Path) -> std::io::Result<Blob> {
    Ok(Blob(fs::read(path)?))
}

/// An entry with a blake3 prefix over the rest (kernels and manifests).
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + body.len());
    out.extend_from_slice(blake3::hash(body).as_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a sealed entry, if its checksum holds.
pub fn unseal(entry: &[u8]) -> Result<&[u8], String> {
    if entry.len() < 32 {
        return Err(format!("{} bytes, shorter than its checksum", entry.len()));
    }
    let (sum, body) = entry.split_at(32);
    if blake3::hash(body).as_bytes()[..] == *sum { Ok(body) } else { Err("checksum mismatch".into()) }
}

/// [`Verify`] for sealed entries.
pub fn verify_sealed(entry: &[u8]) -> Result<(), String> {
    unseal(entry).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn a_replaced_file_keeps_its_mode_and_a_new_one_is_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let kept = dir.path().join("kept");
        fs::write(&kept, b"old").expect("write");
        fs::set_permissions(&kept, fs::Permissions::from_mode(0o640)).expect("chmod");
        write_atomic(&kept, b"new").expect("replaced");
        assert_eq!(fs::read(&kept).expect("read"), b"new");
        assert_eq!(fs::metadata(&kept).expect("meta").permissions().mode() & 0o777, 0o640);
        // New: 0666 less the umask, never tempfile's 0600 unless the umask says so. The
        // umask is read back from a file made the ordinary way.
        let plain = dir.path().join("plain");
        fs::write(&plain, b"x").expect("write");
        let fresh = dir.path().join("fresh");
        write_atomic(&fresh, b"x").expect("written");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), mode(&plain));
    }

    #[test]
    fn small_and_large_files_read_and_compare_byte_for_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, len) in [("small", 1000_usize), ("large", (256 << 10) + 4097)] {
            let path = dir.path().join(name);
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            write_atomic(&path, &bytes).expect("write");
            let blob = read_file(&path).expect("read");
            assert_eq!(*blob, bytes[..]);
            assert!(same_contents(&path, &bytes));
            let mut other = bytes.clone();
            other[len / 2] ^= 1;
            assert!(!same_contents(&path, &other), "{name}: one byte differs");
            assert!(!same_contents(&path, &bytes[..len - 1]), "{name}: shorter");
        }
        assert!(!same_contents(&dir.path().join("missing"), b""));
        assert!(!same_contents(dir.path(), b""), "a folder holds no bytes");
    }
}
