//! A folder of class folders of PNG/JPEG images, as torchvision's `ImageFolder` reads it.
//!
//! Rules:
//! - Layout: `DIR/train/<class>/*` and `DIR/test/<class>/*` (or `val/` for the held-out
//!   split), or `DIR/<class>/*` alone (no test split: the caller holds some out).
//! - Class names sorted (byte order, as `ImageFolder` sorts them) give the labels 0, 1, ...;
//!   the test split's classes must be among the training split's.
//! - `.png`, `.jpg` and `.jpeg` files (any case) are decoded with the `image` crate; hidden
//!   files are skipped; any other file is skipped and counted in a note, never silently.
//! - All images must have one size (the first one read sets it): a different one is an
//!   error naming both. All grey (luma, with or without alpha): one channel; otherwise every
//!   image is converted to RGB (three channels); alpha is dropped (noted).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{DataError, Dataset, Format, Pixels, Split, io_error, shape_error};

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !hidden(p))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether `dir` looks like class folders of images (or has `train/` holding them).
pub fn looks_like(dir: &Path) -> bool {
    let root = if dir.join("train").is_dir() { dir.join("train") } else { dir.to_path_buf() };
    subdirs(&root).is_ok_and(|classes| {
        classes.iter().any(|c| std::fs::read_dir(c).is_ok_and(|mut e| e.any(|f| f.is_ok_and(|f| is_image(&f.path())))))
    })
}

struct Listed {
    files: Vec<(PathBuf, u32)>,
    skipped: Vec<PathBuf>,
}

fn list(root: &Path, classes: &[String]) -> Result<Listed, DataError> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for dir in subdirs(root)? {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(shape_error(
                &dir,
                format!("class `{name}` is not one of the training split's classes ({})", classes.join(", ")),
            ));
        };
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(&dir).map_err(io_error(&dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if hidden(&p) {
                continue;
            }
            if p.is_file() && is_image(&p) {
                files.push((p, label as u32));
            } else {
                skipped.push(p);
            }
        }
    }
    Ok(Listed { files, skipped })
}

/// Decodes every file; all must share the first one's size.
fn decode(files: &[(PathBuf, u32)]) -> Result<Vec<image::DynamicImage>, DataError> {
    let images: Vec<image::DynamicImage> = files
        .par_iter()
        .map(|(p, _)| {
            image::ImageReader::open(p)
                .map_err(io_error(p))?
                .with_guessed_format()
                .map_err(io_error(p))?
                .decode()
                .map_err(|e| shape_error(p, format!("not a readable PNG/JPEG image: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(images)
}

/// Turns decoded images into a split of `channels` channels, channels first.
fn to_split(
    files: &[(PathBuf, u32)],
    images: &[image::DynamicImage],
    channels: usize,
    size: (u32, u32),
) -> Result<Split, DataError> {
    let (w, h) = size;
    let plane = (w * h) as usize;
    let mut px = vec![0u8; images.len() * channels * plane];
    for ((img, (path, _)), out) in images.iter().zip(files).zip(px.chunks_mut(channels * plane)) {
        if (img.width(), img.height()) != size {
            return Err(shape_error(
                path,
                format!(
                    "is {}x{}, the first image is {w}x{h}: every image must have one size",
                    img.width(),
                    img.height()
                ),
            ));
        }
        if channels == 1 {
            out.copy_from_slice(img.to_luma8().as_raw());
        } else {
            let rgb = img.to_rgb8();
            for (k, p) in rgb.as_raw().chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + k] = p[c];
                }
            }
        }
    }
    Ok(Split {
        pixels: Pixels::U8(px),
        labels: files.iter().map(|(_, l)| *l).collect(),
        dims: [channels, h as usize, w as usize],
    })
}

/// Reads the image folder at `dir`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    let (train_root, test_root) = if dir.join("train").is_dir() {
        let test = ["test", "val"].iter().map(|t| dir.join(t)).find(|p| p.is_dir());
        (dir.join("train"), test)
    } else {
        (dir.to_path_buf(), None)
    };
    let classes: Vec<String> =
        subdirs(&train_root)?.iter().filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(String::from)).collect();
    if classes.is_empty() {
        return Err(shape_error(&train_root, "holds no class folders"));
    }
    let train_list = list(&train_root, &classes)?;
    if train_list.files.is_empty() {
        return Err(shape_error(&train_root, "its class folders hold no .png/.jpg/.jpeg images"));
    }
    let test_list = test_root.as_deref().map(|t| list(t, &classes)).transpose()?;
    let train_images = decode(&train_list.files)?;
    let test_images = test_list.as_ref().map(|l| decode(&l.files)).transpose()?;
    let all = || train_images.iter().chain(test_images.iter().flatten());
    let grey = all().all(|i| i.color().channel_count() <= 2);
    let alpha = all().any(|i| i.color().has_alpha());
    let channels = if grey { 1 } else { 3 };
    let size = (train_images[0].width(), train_images[0].height());
    let train = to_split(&train_list.files, &train_images, channels, size)?;
    let test = match (&test_list, &test_images) {
        (Some(l), Some(i)) => Some(to_split(&l.files, i, channels, size)?),
        _ => None,
    };
    let mut notes = Vec::new();
    let skipped: Vec<&PathBuf> = train_list.skipped.iter().chain(test_list.iter().flat_map(|l| &l.skipped)).collect();
    if let Some(first) = skipped.first() {
        notes.push(format!(
            "skipped {} file{} that are not .png/.jpg/.jpeg images (the first: {})",
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" },
            first.display()
        ));
    }
    if alpha {
        notes.push("images with an alpha channel: the alpha values are dropped".into());
    }
    Ok(Dataset {
        format: Format::Folder,
        dir: dir.to_path_buf(),
        train,
        test,
        classes: classes.len(),
        classes_known: true,
        class_names: classes,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, rgb: Option<[u8; 3]>, grey: u8) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        match rgb {
            Some(c) => image::RgbImage::from_pixel(w, h, image::Rgb(c)).save(path).expect("png"),
            None => image::GrayImage::from_pixel(w, h, image::Luma([grey])).save(path).expect("png"),
        }
    }

    #[test]
    fn class_folders_sorted_give_labels_and_rgb_is_channels_first() {
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path();
        png(&d.join("train/dog/a.png"), 4, 3, Some([10, 20, 30]), 0);
        png(&d.join("train/cat/b.PNG"), 4, 3, None, 7);
        png(&d.join("test/dog/c.png"), 4, 3, None, 9);
        std::fs::write(d.join("train/cat/README.txt"), "notes").expect("w");
        std::fs::write(d.join("train/cat/.DS_Store"), "x").expect("w");
        assert_eq!(crate::data::detect(d).expect("detects"), Format::Folder);
        let ds = load(d).expect("reads");
        assert_eq!(ds.class_names, ["cat", "dog"]);
        assert_eq!(ds.train.labels, [0, 1]);
        assert_eq!(ds.train.dims, [3, 3, 4]);
        // cat (grey 7 in every channel), then dog: 12 reds, 12 greens, 12 blues.
        assert_eq!(ds.train.pixels.get(0), 7.0);
        let dog = 3 * 12;
        assert_eq!(
            (ds.train.pixels.get(dog), ds.train.pixels.get(dog + 12), ds.train.pixels.get(dog + 24)),
            (10.0, 20.0, 30.0)
        );
        assert_eq!(ds.test.as_ref().map(|t| t.labels.clone()), Some(vec![1]));
        assert!(ds.notes.iter().any(|n| n.contains("skipped 1 file") && n.contains("README.txt")), "{:?}", ds.notes);
        // A different size and an unknown test class are named.
        png(&d.join("test/bird/x.png"), 4, 3, None, 0);
        assert!(load(d).expect_err("class").to_string().contains("class `bird` is not one of"));
        std::fs::remove_dir_all(d.join("test/bird")).expect("rm");
        png(&d.join("train/dog/big.png"), 5, 3, None, 0);
        assert!(load(d).expect_err("size").to_string().contains("is 5x3, the first image is 4x3"));
    }

    #[test]
    fn all_grey_images_are_one_channel_and_a_broken_file_is_named() {
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path();
        png(&d.join("0/a.png"), 2, 2, None, 100);
        png(&d.join("1/b.png"), 2, 2, None, 200);
        let ds = load(d).expect("reads");
        assert_eq!((ds.train.dims, ds.test.is_none(), ds.classes), ([1, 2, 2], true, 2));
        assert_eq!(ds.train.pixels.get(4), 200.0);
        std::fs::write(d.join("1/c.jpg"), b"not a jpeg").expect("w");
        let err = load(d).expect_err("broken");
        assert!(err.to_string().contains("c.jpg") && err.to_string().contains("not a readable"), "{err}");
    }
}
