//! The CIFAR-10 and CIFAR-100 binary formats.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` .. `data_batch_5.bin` (train) and
//! `test_batch.bin` (test), each a sequence of 3,073-byte records: 1 label byte, then 32x32 red,
//! 32x32 green and 32x32 blue bytes. CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin`,
//! 3,074-byte records: coarse label, fine label, then the same 3,072 pixel bytes.

use std::path::{Path, PathBuf};

use crate::dataset::{ImageDataset, Split};
use crate::error::{read_file, DataError, Result};

const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR-100 label to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar100Label {
    /// The 20 superclasses.
    Coarse,
    /// The 100 classes.
    Fine,
}

/// Parses CIFAR records: `label_bytes` leading label bytes per record, the label used is byte
/// `label_pick`, and labels must be below `num_classes`.
fn parse_records(
    path: &Path,
    data: &[u8],
    label_bytes: usize,
    label_pick: usize,
    num_classes: i64,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<i64>,
) -> Result<()> {
    let rec = label_bytes + PIXELS;
    if data.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            details: "the file has no records; fetch the CIFAR binary version again".into(),
        });
    }
    if data.len() % rec != 0 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            details: format!(
                "{} bytes is not a whole number of {rec}-byte records ({} full records and {} bytes left over); is it the {} binary version?",
                data.len(),
                data.len() / rec,
                data.len() % rec,
                if label_bytes == 1 { "CIFAR-10" } else { "CIFAR-100" }
            ),
        });
    }
    for (i, r) in data.chunks_exact(rec).enumerate() {
        let label = r[label_pick] as i64;
        if label >= num_classes {
            return Err(DataError::format(
                path,
                format!(
                    "record {i} has label {label}, but there are only {num_classes} classes; the file is not CIFAR binary data (or it is CIFAR-100 read as CIFAR-10): use the matching loader"
                ),
            ));
        }
        labels.push(label);
        pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok(())
}

fn files_in(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for n in names {
        let p = dir.join(n);
        if !p.is_file() {
            return Err(DataError::NotFound {
                path: p,
                hint: "the CIFAR binary version (\"cifar-10-binary.tar.gz\" / \"cifar-100-binary.tar.gz\") unpacks this file; pass the folder that holds it".into(),
            });
        }
        out.push(p);
    }
    Ok(out)
}

fn sub_or_self(root: &Path, sub: &str) -> PathBuf {
    let s = root.join(sub);
    if s.is_dir() {
        s
    } else {
        root.to_path_buf()
    }
}

/// Loads a split of CIFAR-10 from `root` (the `cifar-10-batches-bin` folder or its parent).
pub fn load_cifar10(root: &Path, split: Split) -> Result<ImageDataset> {
    let dir = sub_or_self(root, "cifar-10-batches-bin");
    let names: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for p in files_in(&dir, &names)? {
        parse_records(&p, &read_file(&p)?, 1, 0, 10, &mut pixels, &mut labels)?;
    }
    let names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    ImageDataset::new(
        pixels,
        [labels.len(), 3, 32, 32],
        Some(labels),
        names.iter().map(|s| s.to_string()).collect(),
    )
}

/// Loads a split of CIFAR-100 from `root` (the `cifar-100-binary` folder or its parent).
pub fn load_cifar100(root: &Path, split: Split, label: Cifar100Label) -> Result<ImageDataset> {
    let dir = sub_or_self(root, "cifar-100-binary");
    let name = match split {
        Split::Train => "train.bin",
        Split::Test => "test.bin",
    };
    let (pick, classes) = match label {
        Cifar100Label::Coarse => (0, 20),
        Cifar100Label::Fine => (1, 100),
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for p in files_in(&dir, &[name.to_string()])? {
        parse_records(
            &p,
            &read_file(&p)?,
            2,
            pick,
            classes,
            &mut pixels,
            &mut labels,
        )?;
    }
    ImageDataset::new(pixels, [labels.len(), 3, 32, 32], Some(labels), Vec::new())
}
