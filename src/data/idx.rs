//! IDX files (the MNIST format): a big-endian header `0x00 0x00 TYPE RANK`, one u32 per
//! dimension, then the data. Read raw or gzip-compressed (sniffed by the gzip magic).
//!
//! Rules: only unsigned-byte data (type 0x08) is accepted; the data must be exactly as long as
//! the dimensions say. Every failure names the file and what was expected.

use std::io::Read;
use std::path::Path;

/// An IDX tensor of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read `{path}`: {why}")]
    Io { path: String, why: String },
    #[error(
        "`{path}` is not an IDX file: magic number {found:#010x}, expected 0x00000801 (labels) or 0x00000803 (images) of unsigned bytes"
    )]
    Magic { path: String, found: u32 },
    #[error("`{path}` is truncated: its header says {expected} bytes of data, the file has {got}")]
    Truncated { path: String, expected: usize, got: usize },
    #[error("`{path}` has {extra} bytes after the data its header describes")]
    Trailing { path: String, extra: usize },
    #[error("`{path}` has rank {found}, expected {expected}")]
    Rank { path: String, found: usize, expected: usize },
}

/// Parses IDX bytes (already decompressed).
pub fn parse(bytes: &[u8], path: &str) -> Result<Idx, IdxError> {
    let header =
        |n: usize| bytes.get(..n).ok_or(IdxError::Truncated { path: path.into(), expected: n, got: bytes.len() });
    let magic = header(4)?;
    let found = u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]);
    let rank = magic[3] as usize;
    if magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || rank == 0 || rank > 4 {
        return Err(IdxError::Magic { path: path.into(), found });
    }
    let head = header(4 + 4 * rank)?;
    let dims: Vec<usize> =
        head[4..].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
    let data = &bytes[4 + 4 * rank..];
    if data.len() < len {
        return Err(IdxError::Truncated { path: path.into(), expected: len, got: data.len() });
    }
    if data.len() > len {
        return Err(IdxError::Trailing { path: path.into(), extra: data.len() - len });
    }
    Ok(Idx { dims, data: data.to_vec() })
}

/// Reads an IDX file, gzip-compressed or raw.
pub fn read(path: &Path) -> Result<Idx, IdxError> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| IdxError::Io { path: name.clone(), why: e.to_string() };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| IdxError::Io { path: name.clone(), why: format!("bad gzip data: {e}") })?;
        out
    } else {
        raw
    };
    parse(&bytes, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_dims_and_data_and_names_each_defect() {
        let ok = file(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(parse(&ok, "a").expect("valid"), Idx { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] });
        let mut bad = ok.clone();
        bad[2] = 0x0d; // float data
        assert!(matches!(parse(&bad, "a"), Err(IdxError::Magic { found: 0x0d02, .. })));
        assert!(matches!(parse(&ok[..9], "a"), Err(IdxError::Truncated { expected: 12, .. })));
        assert!(matches!(parse(&ok[..ok.len() - 1], "a"), Err(IdxError::Truncated { expected: 6, got: 5, .. })));
        let mut long = ok.clone();
        long.push(0);
        assert_eq!(parse(&long, "a"), Err(IdxError::Trailing { path: "a".into(), extra: 1 }));
        assert!(matches!(parse(b"PK\x03\x04", "a"), Err(IdxError::Magic { .. })));
        assert!(parse(&ok, "a").expect("ok").dims.len() == 2);
    }

    #[test]
    fn gzip_and_raw_files_read_the_same() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp");
        let raw = file(&[4], &[9, 8, 7, 6]);
        std::fs::write(dir.path().join("raw"), &raw).expect("write");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).expect("gzip");
        std::fs::write(dir.path().join("raw.gz"), gz.finish().expect("gzip")).expect("write");
        assert_eq!(read(&dir.path().join("raw")), read(&dir.path().join("raw.gz")));
        let mut cut = std::fs::read(dir.path().join("raw.gz")).expect("read");
        cut.truncate(cut.len() / 2);
        std::fs::write(dir.path().join("cut.gz"), cut).expect("write");
        assert!(matches!(read(&dir.path().join("cut.gz")), Err(IdxError::Io { .. })));
        assert!(matches!(read(&dir.path().join("missing")), Err(IdxError::Io { .. })));
    }
}
