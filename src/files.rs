//! Files a user hands the commands, recognised by their first bytes (whatever their names),
//! and NumPy inputs read with their sizes checked before anything is allocated.
//!
//! Rules:
//! - [`sniff`] tells a `.tri` source from a NumPy array (`.npy`), a NumPy archive (`.npz`), a
//!   safetensors weights file and a compiled artifact (`.tcm`); a command handed the wrong one
//!   says what it is and where it goes ([`misplaced`]) instead of reading binary as text.
//! - A `.npy` header's shape is checked against the bytes that follow it, and the values'
//!   size against [`crate::limits`], before the array is read: a 4 KB file claiming a
//!   petabyte is an error, not an allocation.
//! - Arrays are float32 or float64 (float64 is rounded to float32); other dtypes are errors
//!   naming the dtype.

use std::io::Read;
use std::path::Path;

use ndarray::ArrayD;

use crate::limits;

/// What a file is, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Npy,
    Npz,
    Safetensors,
    Artifact,
    /// Anything else (a `.tri` source, or a file Triton does not know).
    Other,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Npy => "a NumPy array (.npy)",
            Kind::Npz => "a zip archive (a NumPy .npz)",
            Kind::Safetensors => "a safetensors weights file",
            Kind::Artifact => "a compiled Triton model (.tcm)",
            Kind::Other => "a file",
        }
    }

    /// Where a file of this kind goes on the command line.
    pub fn goes(self) -> &'static str {
        match self {
            Kind::Npy | Kind::Npz => "give it to `triton run MODEL --input FILE`",
            Kind::Safetensors => "give it with `--weights FILE` to `triton run`, `compile` or `bench`",
            Kind::Artifact => "run it with `triton run FILE --input X.npy`",
            Kind::Other => "",
        }
    }
}

/// The kind of `head`, a file's first bytes (at least 16 when the file has them).
pub fn kind_of(head: &[u8]) -> Kind {
    if head.starts_with(b"\x93NUMPY") {
        return Kind::Npy;
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Kind::Npz;
    }
    if head.starts_with(&triton_runtime::artifact::MAGIC) {
        return Kind::Artifact;
    }
    // safetensors: an 8-byte little-endian header length, then a JSON object.
    if head.len() >= 10 {
        let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
        if (2..(100 << 20)).contains(&n) && head[8] == b'{' && (head[9] == b'"' || head[9] == b'}' || head[9] == b' ') {
            return Kind::Safetensors;
        }
    }
    Kind::Other
}

/// The kind of the file at `path` (`None` when it cannot be read).
pub fn sniff(path: &Path) -> Option<Kind> {
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path).ok()?.take(16).read_to_end(&mut head).ok()?;
    Some(kind_of(&head))
}

/// Whether a command may write `path`: when it is absent, or when the user named it (`explicit`)
/// and it is a file of the kind the command writes (`ours`). `command` and `flag` word the
/// refusal (`triton import`, `-o`). Nothing a user wrote is replaced.
pub fn may_replace(
    path: &Path,
    explicit: bool,
    ours: impl Fn(&Path) -> bool,
    command: &str,
    flag: &str,
) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("`{}` is a folder; give a file name", path.display()));
    }
    if !path.exists() {
        return Ok(());
    }
    match (explicit, ours(path)) {
        (true, true) => Ok(()),
        (true, false) => Err(format!(
            "`{}` exists and was not written by `{command}`; it is kept (choose another name)",
            path.display()
        )),
        (false, _) => Err(format!(
            "`{}` exists; `{command}` never replaces a file it was not told to (give {flag} to choose the output)",
            path.display()
        )),
    }
}

/// When `path` is a known binary kind other than `expected`, the error a command gives for it.
pub fn misplaced(path: &Path, wanted: &str, allowed: &[Kind]) -> Option<String> {
    let kind = sniff(path)?;
    if kind == Kind::Other || allowed.contains(&kind) {
        return None;
    }
    Some(format!("`{}` is {}, not {wanted}: {}", path.display(), kind.describe(), kind.goes()))
}

/// The parts of a `.npy` header that sizes depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyHeader {
    pub descr: String,
    pub shape: Vec<u64>,
    /// Bytes before the data.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Bytes per value, from the dtype's descriptor (`<f4` -> 4).
    pub fn item_size(&self) -> Option<u64> {
        self.descr.trim_start_matches(['<', '>', '|', '=']).get(1..)?.parse().ok()
    }
}

/// Reads a `.npy` header; `name` is for messages.
pub fn npy_header(bytes: &[u8], name: &str) -> Result<NpyHeader, String> {
    let bad = |why: &str| format!("`{name}` is not a readable .npy array: {why}");
    if !bytes.starts_with(b"\x93NUMPY") || bytes.len() < 10 {
        return Err(bad("it does not start with the NumPy magic bytes"));
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(&format!("format version {v} is not one NumPy writes"))),
    };
    let end = start.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("the header is cut short"))?;
    let text = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("the header is not text"))?;
    let value_after = |key: &str| text.find(key).map(|i| text[i + key.len()..].trim_start_matches([' ', ':']));
    let descr = value_after("'descr'")
        .and_then(|v| v.strip_prefix('\'').and_then(|v| v.split('\'').next()))
        .ok_or_else(|| bad("the header has no dtype ('descr')"))?
        .to_string();
    let tuple = value_after("'shape'")
        .and_then(|v| v.strip_prefix('(').and_then(|v| v.split(')').next()))
        .ok_or_else(|| bad("the header has no shape"))?;
    let shape = tuple
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(&format!("the shape ({tuple}) is not a tuple of sizes")))?;
    Ok(NpyHeader { descr, shape, data_offset: end })
}

/// Checks a header against the bytes that hold it and the machine's memory.
fn check_npy(h: &NpyHeader, total: u64, name: &str) -> Result<(), String> {
    let item = h.item_size().ok_or_else(|| format!("`{name}`: unknown dtype `{}`", h.descr))?;
    let need = limits::tensor_bytes(&h.shape, item);
    let have = total.saturating_sub(h.data_offset as u64);
    let shape = h.shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    match need {
        Some(n) if n <= have => {}
        Some(n) => {
            return Err(format!(
                "`{name}` says its shape is ({shape}) of `{}`, {}, but holds only {} of data: the file is cut short or its header is wrong",
                h.descr,
                limits::human(n),
                limits::human(have)
            ));
        }
        None => return Err(format!("`{name}` says its shape is ({shape}): more values than can be counted")),
    }
    limits::check_alloc(&format!("`{name}` ({shape}) as float32"), limits::tensor_bytes(&h.shape, 4))
}

/// Reads a float32 or float64 array from `.npy` bytes; `name` is for messages.
pub fn npy_from_bytes(bytes: &[u8], name: &str) -> Result<ArrayD<f32>, String> {
    let h = npy_header(bytes, name)?;
    check_npy(&h, bytes.len() as u64, name)?;
    let unreadable = |e: ndarray_npy::ReadNpyError| format!("`{name}` is not a readable .npy array: {e}");
    match <ArrayD<f32> as ndarray_npy::ReadNpyExt>::read_npy(bytes) {
        Ok(a) => return Ok(a),
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(unreadable(e)),
    }
    match <ArrayD<f64> as ndarray_npy::ReadNpyExt>::read_npy(bytes) {
        Ok(a) => return Ok(a.mapv(|v| v as f32)),
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(unreadable(e)),
    }
    // Integers (token ids): carried in f32, exact up to 2^24.
    let ints = match <ArrayD<i64> as ndarray_npy::ReadNpyExt>::read_npy(bytes) {
        Ok(a) => a,
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => {
            match <ArrayD<i32> as ndarray_npy::ReadNpyExt>::read_npy(bytes) {
                Ok(a) => a.mapv(i64::from),
                Err(ndarray_npy::ReadNpyError::WrongDescriptor(d)) => {
                    return Err(format!(
                        "`{name}` holds {d} values; expected a float32, float64, int32 or int64 array"
                    ));
                }
                Err(e) => return Err(unreadable(e)),
            }
        }
        Err(e) => return Err(unreadable(e)),
    };
    const EXACT: i64 = 1 << 24;
    if let Some((i, v)) = ints.iter().enumerate().find(|(_, v)| v.abs() > EXACT) {
        return Err(format!(
            "`{name}` holds the integer {v} (element {i}); integer inputs (token ids) must lie within +-2^24 = {EXACT}"
        ));
    }
    Ok(ints.mapv(|v| v as f32))
}

/// Reads a `.npy` file ([`npy_from_bytes`]); the header is checked before the data is read.
pub fn read_npy(path: &Path) -> Result<ArrayD<f32>, String> {
    npy_from_bytes(&read_npy_bytes(path)?, &path.display().to_string())
}

/// The bytes of a `.npy` file, its header checked against its size and the machine's memory
/// before the data is read.
pub fn read_npy_bytes(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.display().to_string();
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = Vec::new();
    (&mut file).take(1 << 20).read_to_end(&mut head).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    if head.starts_with(b"\x93NUMPY") {
        check_npy(&npy_header(&head, &name)?, total, &name)?;
    } else if let Some(why) = misplaced(path, "a NumPy array (.npy)", &[]) {
        return Err(why);
    }
    let mut bytes = head;
    file.read_to_end(&mut bytes).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    Ok(bytes)
}

/// Reads every array of a `.npz` archive, by name (the `.npy` suffix dropped), in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, ArrayD<f32>)>, String> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read `{name}`: {e}"))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("`{name}` is not a readable .npz archive: {e}"))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| format!("`{name}`: entry {i}: {e}"))?;
        let entry_name = entry.name().map_err(|e| format!("`{name}`: entry {i}: {e}"))?.to_string();
        let label = format!("{name}:{entry_name}");
        // The declared size bounds what is read; a compressed entry may not claim more than
        // a generous ratio of the archive (deflate tops out near 1000:1).
        let size = entry.size();
        let bound = total.saturating_mul(1032).max(1 << 20);
        if size > bound {
            return Err(format!(
                "`{label}` claims {} uncompressed from a {} archive",
                limits::human(size),
                limits::human(total)
            ));
        }
        limits::check_alloc(&format!("`{label}`"), Some(size))?;
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut entry).take(size).read_to_end(&mut bytes).map_err(|e| format!("cannot read `{label}`: {e}"))?;
        let array = npy_from_bytes(&bytes, &label)?;
        out.push((entry_name.trim_end_matches(".npy").to_string(), array));
    }
    if out.is_empty() {
        return Err(format!("`{name}` holds no arrays"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn kinds_are_told_by_their_first_bytes() {
        assert_eq!(kind_of(&npy("<f4", "(1,)", &[0; 4])), Kind::Npy);
        assert_eq!(kind_of(b"PK\x03\x04rest"), Kind::Npz);
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert_eq!(kind_of(&st), Kind::Safetensors);
        assert_eq!(kind_of(&triton_runtime::artifact::MAGIC), Kind::Artifact);
        assert_eq!(kind_of(b"model M {"), Kind::Other);
        assert_eq!(kind_of(b""), Kind::Other);
    }

    #[test]
    fn headers_are_checked_against_the_data_before_reading() {
        let ok = npy("<f4", "(2, 3)", &[0; 24]);
        let h = npy_header(&ok, "x").expect("header");
        assert_eq!((h.descr.as_str(), h.shape.as_slice(), h.item_size()), ("<f4", &[2u64, 3][..], Some(4)));
        assert_eq!(npy_from_bytes(&ok, "x").expect("reads").shape(), [2, 3]);
        let f64s = npy("<f8", "(2,)", &1.5f64.to_le_bytes().repeat(2));
        assert_eq!(npy_from_bytes(&f64s, "x").expect("reads").as_slice(), Some(&[1.5f32, 1.5][..]));
        // A petabyte claimed by a small file.
        let huge = npy("<f4", "(1000000000000, 784)", &[0; 4096]);
        let err = npy_from_bytes(&huge, "big.npy").expect_err("refused");
        assert!(err.contains("(1000000000000, 784)") && err.contains("holds only 4.1 KB"), "{err}");
        let overflow = npy("<f4", "(18446744073709551615, 4)", &[]);
        assert!(npy_from_bytes(&overflow, "o").expect_err("refused").contains("more values than can be counted"));
        // Integers (token ids) read as f32, exactly up to 2^24; other dtypes are refused.
        let ints = npy("<i4", "(2,)", &[7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(npy_from_bytes(&ints, "i").expect("reads").as_slice(), Some(&[7.0f32, -1.0][..]));
        let far = npy("<i8", "(1,)", &(1i64 << 25).to_le_bytes());
        assert!(npy_from_bytes(&far, "i").expect_err("beyond 2^24").contains("2^24"));
        let halves = npy("<u2", "(2,)", &[0; 4]);
        let err = npy_from_bytes(&halves, "h").expect_err("dtype");
        assert!(err.contains("float32, float64, int32 or int64"), "{err}");
        assert!(npy_header(b"\x93NUMPY\x01\x00\xff\xff", "t").expect_err("short").contains("cut short"));
    }
}
