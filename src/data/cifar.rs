//! CIFAR-10 and CIFAR-100 in their binary form (the "binary version" from the dataset's page).
//!
//! Rules:
//! - CIFAR-10: `data_batch_1.bin` ... `data_batch_N.bin` (read in number order, from 1 with no
//!   gap) and `test_batch.bin`; each record is 1 label byte (0-9) and 3,072 pixel bytes, the
//!   1,024 red then green then blue values of a 32x32 image, row by row.
//! - CIFAR-100: `train.bin` and `test.bin`; each record is a coarse label (0-19), a fine label
//!   (0-99) and the same 3,072 bytes. Fine labels unless coarse ones are asked for.
//! - A file whose length is not a whole number of records, or a label out of range, is an
//!   error naming the file, the record and what was expected. The test file may be absent.
//! - Class names come from `batches.meta.txt` / `fine_label_names.txt` /
//!   `coarse_label_names.txt` when present.

use std::path::Path;

use super::{DataError, Dataset, Format, Pixels, Split, io_error, shape_error};

const PIXELS: usize = 3 * 32 * 32;

/// Parses records of `label_bytes` labels (the one at `which` kept) and 3,072 pixels.
fn records(path: &Path, label_bytes: usize, which: usize, classes: usize, into: &mut Split) -> Result<(), DataError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % rec != 0 {
        return Err(shape_error(
            path,
            format!(
                "{} bytes is not a whole number of {rec}-byte records ({label_bytes} label byte{} and 3,072 pixels)",
                bytes.len(),
                if label_bytes == 1 { "" } else { "s" }
            ),
        ));
    }
    let Pixels::U8(px) = &mut into.pixels else { return Err(shape_error(path, "internal: CIFAR pixels are bytes")) };
    px.reserve(bytes.len() / rec * PIXELS);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[which];
        if label as usize >= classes {
            return Err(shape_error(path, format!("record {i} has label {label}, expected 0..{}", classes - 1)));
        }
        into.labels.push(u32::from(label));
        px.extend_from_slice(&r[label_bytes..]);
    }
    Ok(())
}

fn empty() -> Split {
    Split { pixels: Pixels::U8(Vec::new()), labels: Vec::new(), dims: [3, 32, 32] }
}

fn names(path: &Path, classes: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() == classes { names } else { Vec::new() }
}

/// Reads CIFAR-10 from `dir`.
pub fn load10(dir: &Path) -> Result<Dataset, DataError> {
    let mut train = empty();
    let mut n = 1;
    while dir.join(format!("data_batch_{n}.bin")).is_file() {
        records(&dir.join(format!("data_batch_{n}.bin")), 1, 0, 10, &mut train)?;
        n += 1;
    }
    if n == 1 {
        return Err(shape_error(dir, "no data_batch_1.bin (CIFAR-10's first training batch)"));
    }
    let test_path = dir.join("test_batch.bin");
    let test = if test_path.is_file() {
        let mut t = empty();
        records(&test_path, 1, 0, 10, &mut t)?;
        Some(t)
    } else {
        None
    };
    let mut notes = Vec::new();
    if n <= 5 {
        notes.push(format!("CIFAR-10 has 5 training batches; {} holds {}", dir.display(), n - 1));
    }
    Ok(Dataset {
        format: Format::Cifar10,
        dir: dir.to_path_buf(),
        train,
        test,
        classes: 10,
        classes_known: true,
        class_names: names(&dir.join("batches.meta.txt"), 10),
        notes,
    })
}

/// Reads CIFAR-100 from `dir`, with its fine (100) or coarse (20) labels.
pub fn load100(dir: &Path, coarse: bool) -> Result<Dataset, DataError> {
    let (which, classes) = if coarse { (0, 20) } else { (1, 100) };
    let mut train = empty();
    records(&dir.join("train.bin"), 2, which, classes, &mut train)?;
    let test_path = dir.join("test.bin");
    let test = if test_path.is_file() {
        let mut t = empty();
        records(&test_path, 2, which, classes, &mut t)?;
        Some(t)
    } else {
        None
    };
    let names_file = if coarse { "coarse_label_names.txt" } else { "fine_label_names.txt" };
    Ok(Dataset {
        format: if coarse { Format::Cifar100Coarse } else { Format::Cifar100 },
        dir: dir.to_path_buf(),
        train,
        test,
        classes,
        classes_known: true,
        class_names: names(&dir.join(names_file), classes),
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of CIFAR-10's layout: label, then 1,024 bytes per colour plane.
    fn record(label: u8, r: u8, g: u8, b: u8) -> Vec<u8> {
        let mut v = vec![label];
        for c in [r, g, b] {
            v.extend(std::iter::repeat_n(c, 1024));
        }
        v
    }

    #[test]
    fn cifar10_batches_read_in_order_with_planes_channels_first() {
        let dir = tempfile::tempdir().expect("temp");
        std::fs::write(dir.path().join("data_batch_1.bin"), [record(3, 1, 2, 3), record(9, 4, 5, 6)].concat())
            .expect("w");
        std::fs::write(dir.path().join("data_batch_2.bin"), record(0, 7, 8, 9)).expect("w");
        std::fs::write(dir.path().join("test_batch.bin"), record(1, 0, 0, 255)).expect("w");
        let d = load10(dir.path()).expect("reads");
        assert_eq!(d.train.labels, [3, 9, 0]);
        assert_eq!(d.train.dims, [3, 32, 32]);
        let px = |s: &Split, i: usize| s.pixels.get(i);
        assert_eq!((px(&d.train, 0), px(&d.train, 1024), px(&d.train, 2048)), (1.0, 2.0, 3.0));
        assert_eq!(px(&d.train, 2 * 3072 + 3071), 9.0);
        assert_eq!(d.test.as_ref().map(|t| t.labels.clone()), Some(vec![1]));
        assert!(d.notes[0].contains("holds 2"), "{:?}", d.notes);
        // A cut record and a label out of range are named.
        std::fs::write(dir.path().join("data_batch_2.bin"), &record(0, 7, 8, 9)[..100]).expect("w");
        assert!(load10(dir.path()).expect_err("cut").to_string().contains("not a whole number of 3073-byte records"));
        std::fs::write(dir.path().join("data_batch_2.bin"), record(10, 7, 8, 9)).expect("w");
        assert!(load10(dir.path()).expect_err("label").to_string().contains("record 0 has label 10, expected 0..9"));
    }

    #[test]
    fn cifar100_reads_fine_or_coarse_labels() {
        let dir = tempfile::tempdir().expect("temp");
        let mut rec = vec![19u8, 99];
        rec.extend(std::iter::repeat_n(5u8, PIXELS));
        std::fs::write(dir.path().join("train.bin"), &rec).expect("w");
        assert_eq!(load100(dir.path(), false).expect("fine").train.labels, [99]);
        let coarse = load100(dir.path(), true).expect("coarse");
        assert_eq!((coarse.train.labels[0], coarse.classes), (19, 20));
        assert_eq!(crate::data::detect(dir.path()).expect("detects"), Format::Cifar100);
    }
}
