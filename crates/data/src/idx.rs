//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed, and the folder layouts it
//! is usually found in.
//!
//! An IDX file starts with the magic number `0x00 0x00 <dtype> <ndim>`, then `ndim` big-endian
//! `u32` dimensions, then the values, big-endian, row-major. Images files are `u8` with 3
//! dimensions `(n, rows, cols)`; labels files are `u8` with 1 dimension `(n)`.
//!
//! [`find_mnist_dir`] looks for the files in the layouts people already have:
//! the Debian package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), torchvision's
//! download folder (`<root>/FashionMNIST/raw/`, `<root>/MNIST/raw/`), a `raw/` folder, or the
//! folder itself. File names may use `-idx3-ubyte` or `.idx3-ubyte` and may end in `.gz`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::{ImageDataset, Split};
use crate::error::{read_file, DataError, Result};

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, index = label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The element type of an IDX file (the third byte of its magic number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxType {
    /// `0x08`: unsigned byte.
    U8,
    /// `0x09`: signed byte.
    I8,
    /// `0x0B`: big-endian `i16`.
    I16,
    /// `0x0C`: big-endian `i32`.
    I32,
    /// `0x0D`: big-endian `f32`.
    F32,
    /// `0x0E`: big-endian `f64`.
    F64,
}

impl IdxType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => IdxType::U8,
            0x09 => IdxType::I8,
            0x0B => IdxType::I16,
            0x0C => IdxType::I32,
            0x0D => IdxType::F32,
            0x0E => IdxType::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            IdxType::U8 | IdxType::I8 => 1,
            IdxType::I16 => 2,
            IdxType::I32 | IdxType::F32 => 4,
            IdxType::F64 => 8,
        }
    }
}

/// A decoded IDX file: its element type, dimensions and the raw (big-endian) value bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    /// Element type.
    pub dtype: IdxType,
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The values' bytes, big-endian, `dims.product() * dtype.size()` of them.
    pub bytes: Vec<u8>,
}

impl IdxArray {
    /// The values converted to `f64`.
    pub fn to_f64(&self) -> Vec<f64> {
        let b = &self.bytes;
        match self.dtype {
            IdxType::U8 => b.iter().map(|&x| x as f64).collect(),
            IdxType::I8 => b.iter().map(|&x| x as i8 as f64).collect(),
            IdxType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]) as f64)
                .collect(),
            IdxType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            IdxType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            IdxType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        }
    }
}

/// Reads a file, transparently decompressing gzip (detected by its `1f 8b` magic, whatever the
/// file is called).
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = read_file(path)?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        let mut dec = flate2::read::MultiGzDecoder::new(&raw[..]);
        dec.read_to_end(&mut out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                DataError::Truncated {
                    path: path.to_path_buf(),
                    details: format!(
                        "the gzip stream ends early ({} compressed bytes)",
                        raw.len()
                    ),
                }
            } else {
                DataError::Decode {
                    path: path.to_path_buf(),
                    details: format!("bad gzip data ({e}); the file is corrupt: fetch it again"),
                }
            }
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes (already decompressed); `path` is only used in error messages.
pub fn parse_idx(path: &Path, data: &[u8]) -> Result<IdxArray> {
    let bad_magic = |found: String| DataError::BadMagic {
        path: path.to_path_buf(),
        found,
        expected: "00 00 <type 08..0E> <ndim>".into(),
        format: "an IDX file",
    };
    if data.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            details: format!(
                "{} bytes, shorter than the 4-byte IDX magic number",
                data.len()
            ),
        });
    }
    let magic = format!(
        "{:02x} {:02x} {:02x} {:02x}",
        data[0], data[1], data[2], data[3]
    );
    if data[0] != 0 || data[1] != 0 {
        return Err(bad_magic(magic));
    }
    let dtype = IdxType::from_code(data[2]).ok_or_else(|| bad_magic(magic.clone()))?;
    let ndim = data[3] as usize;
    if ndim == 0 {
        return Err(bad_magic(magic));
    }
    let header = 4 + 4 * ndim;
    if data.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            details: format!(
                "{} bytes, shorter than the {header}-byte header of a {ndim}-d IDX file",
                data.len()
            ),
        });
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            u32::from_be_bytes([
                data[4 + 4 * i],
                data[5 + 4 * i],
                data[6 + 4 * i],
                data[7 + 4 * i],
            ]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            DataError::format(
                path,
                format!(
                    "IDX dimensions {dims:?} overflow; the header is corrupt: replace the file"
                ),
            )
        })?;
    let body = data.len() - header;
    if body < count {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            details: format!("header {dims:?} needs {count} data bytes, the file has {body}"),
        });
    }
    if body > count {
        return Err(DataError::format(
            path,
            format!(
                "{} bytes after the data that header {dims:?} describes; the header is wrong or files were concatenated: replace the file",
                body - count
            ),
        ));
    }
    Ok(IdxArray {
        dtype,
        dims,
        bytes: data[header..].to_vec(),
    })
}

/// Reads an IDX file, raw or gzip.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let data = read_maybe_gzip(path)?;
    parse_idx(path, &data)
}

fn expect_u8(path: &Path, a: &IdxArray, ndim: usize, what: &str) -> Result<()> {
    if a.dtype != IdxType::U8 || a.dims.len() != ndim {
        return Err(DataError::format(
            path,
            format!(
                "an IDX {what} file must hold {ndim}-d u8 data, this one holds {}-d {:?}; pass the {what} file",
                a.dims.len(),
                a.dtype
            ),
        ));
    }
    Ok(())
}

/// Loads an images file (`u8`, `(n, rows, cols)`) and, optionally, its labels file (`u8`, `(n)`).
pub fn load_idx_images(images: &Path, labels: Option<&Path>) -> Result<ImageDataset> {
    let img = read_idx(images)?;
    expect_u8(images, &img, 3, "images")?;
    let (n, h, w) = (img.dims[0], img.dims[1], img.dims[2]);
    let labels = match labels {
        None => None,
        Some(lp) => {
            let lab = read_idx(lp)?;
            expect_u8(lp, &lab, 1, "labels")?;
            if lab.dims[0] != n {
                return Err(DataError::CountMismatch {
                    images: images.to_path_buf(),
                    labels: lp.to_path_buf(),
                    n_images: n,
                    n_labels: lab.dims[0],
                });
            }
            Some(lab.bytes.iter().map(|&b| b as i64).collect())
        }
    };
    ImageDataset::new(img.bytes, [n, 1, h, w], labels, Vec::new())
}

/// The images and labels files of one split found in a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxFiles {
    /// The images file.
    pub images: PathBuf,
    /// The labels file, if present.
    pub labels: Option<PathBuf>,
}

fn prefix(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "t10k",
    }
}

fn find_file(dir: &Path, stem: &str, kind: &str) -> Option<PathBuf> {
    for sep in ["-", "."] {
        for ext in ["", ".gz"] {
            let p = dir.join(format!("{stem}{sep}{kind}-ubyte{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Finds the IDX files of `split` under `root`: in `root`, `root/raw`, `root/FashionMNIST/raw`,
/// `root/MNIST/raw` (torchvision) or `root/fashion-mnist`. The first folder that has the images
/// file wins; its labels file is optional.
pub fn find_mnist_dir(root: &Path, split: Split) -> Result<IdxFiles> {
    let candidates = [
        root.to_path_buf(),
        root.join("raw"),
        root.join("FashionMNIST").join("raw"),
        root.join("MNIST").join("raw"),
        root.join("fashion-mnist"),
    ];
    let stem = prefix(split);
    for dir in &candidates {
        if let Some(images) = find_file(dir, &format!("{stem}-images"), "idx3") {
            let labels = find_file(dir, &format!("{stem}-labels"), "idx1");
            return Ok(IdxFiles { images, labels });
        }
    }
    if !root.exists() {
        return Err(DataError::NotFound {
            path: root.to_path_buf(),
            hint: format!(
                "no such folder; install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (it goes to {DEBIAN_FASHION_MNIST_DIR}) or pass the folder holding the IDX files"
            ),
        });
    }
    Err(DataError::NotFound {
        path: root.join(format!("{stem}-images-idx3-ubyte.gz")),
        hint: format!(
            "no {stem}-images-idx3-ubyte[.gz] in {} or its raw/, FashionMNIST/raw/, MNIST/raw/ subfolders; pass the folder that holds the IDX files",
            root.display()
        ),
    })
}

/// Loads one split of MNIST-format data from `root` (see [`find_mnist_dir`]). Labels are loaded
/// when the labels file is present; `require_labels` turns a missing labels file into an error.
pub fn load_mnist(root: &Path, split: Split, require_labels: bool) -> Result<ImageDataset> {
    let files = find_mnist_dir(root, split)?;
    if require_labels && files.labels.is_none() {
        let stem = prefix(split);
        return Err(DataError::NotFound {
            path: files
                .images
                .with_file_name(format!("{stem}-labels-idx1-ubyte.gz")),
            hint: format!(
                "the labels file of {} is missing; copy it next to the images file",
                files.images.display()
            ),
        });
    }
    load_idx_images(&files.images, files.labels.as_deref())
}

/// Loads one split of Fashion-MNIST (labelled) from `root`, with its class names.
pub fn load_fashion_mnist(root: &Path, split: Split) -> Result<ImageDataset> {
    let mut ds = load_mnist(root, split, true)?;
    ds.class_names = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect();
    Ok(ds)
}

/// Loads one split of Fashion-MNIST from the Debian package's folder.
pub fn load_fashion_mnist_debian(split: Split) -> Result<ImageDataset> {
    load_fashion_mnist(Path::new(DEBIAN_FASHION_MNIST_DIR), split)
}

/// Encodes an IDX file (`u8` data) — for writing test fixtures or converted data.
pub fn encode_idx_u8(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_idx_file() {
        let bytes = encode_idx_u8(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse_idx(Path::new("x"), &bytes).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.dtype, IdxType::U8);
        assert_eq!(a.bytes[11], 12);
    }

    #[test]
    fn parses_big_endian_i32_and_f32() {
        let mut b = vec![0, 0, 0x0C, 1, 0, 0, 0, 2];
        b.extend_from_slice(&(-5i32).to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        assert_eq!(
            parse_idx(Path::new("x"), &b).unwrap().to_f64(),
            vec![-5.0, 7.0]
        );
        let mut b = vec![0, 0, 0x0D, 1, 0, 0, 0, 1];
        b.extend_from_slice(&1.5f32.to_be_bytes());
        assert_eq!(parse_idx(Path::new("x"), &b).unwrap().to_f64(), vec![1.5]);
    }

    #[test]
    fn rejects_bad_headers() {
        let p = Path::new("f");
        assert!(matches!(
            parse_idx(p, &[1, 0, 8, 1]),
            Err(DataError::BadMagic { .. })
        ));
        assert!(matches!(
            parse_idx(p, &[0, 0, 0x42, 1]),
            Err(DataError::BadMagic { .. })
        ));
        assert!(matches!(
            parse_idx(p, &[0, 0]),
            Err(DataError::Truncated { .. })
        ));
        assert!(matches!(
            parse_idx(p, &[0, 0, 8, 1, 0, 0, 0, 5, 1, 2]),
            Err(DataError::Truncated { .. })
        ));
        assert!(matches!(
            parse_idx(p, &[0, 0, 8, 1, 0, 0, 0, 1, 1, 2]),
            Err(DataError::Format { .. })
        ));
    }
}
