//! Loading what `--dataset` and `--data` name: image splits with their normalisation, or a text
//! corpus with its vocabulary.

use std::path::{Path, PathBuf};

use selfsup_data::augment::normalize::Normalize;
use selfsup_data::folder::{load_image_folder, ColorMode, FolderLayout, FolderOptions};
use selfsup_data::vocab::Vocab;
use selfsup_data::{cifar, idx, text, ImageDataset, Split};

use crate::error::{input, Result};
use crate::runconfig::DatasetKind;

/// Train and (when there is one) test split of an image dataset.
pub struct ImageData {
    /// Training images (labels when the dataset has them).
    pub train: ImageDataset,
    /// Held-out test images, when the dataset has a test split.
    pub test: Option<ImageDataset>,
    /// Per-channel normalisation applied to every view.
    pub normalize: Normalize,
}

/// A text corpus split into training and validation text.
pub struct TextData {
    /// Training text.
    pub train: String,
    /// Validation text.
    pub validation: String,
}

/// The special tokens every text vocabulary starts with.
pub fn specials() -> Vec<String> {
    vec![
        "[PAD]".into(),
        "[MASK]".into(),
        "[CLS]".into(),
        "[SEP]".into(),
    ]
}

fn missing(kind: DatasetKind, path: &Path, how: &str) -> crate::error::CliError {
    crate::error::CliError::Input(format!(
        "{} not found at {}: {how}",
        kind.as_str(),
        path.display()
    ))
}

/// Loads an image dataset (`data` empty = its default location).
pub fn load_images(kind: DatasetKind, data: &str, image_size: usize) -> Result<ImageData> {
    let given = !data.is_empty();
    let root = if given {
        PathBuf::from(data)
    } else {
        match kind {
            DatasetKind::FashionMnist => PathBuf::from(idx::DEBIAN_FASHION_MNIST_DIR),
            _ => {
                return input(format!(
                    "--dataset {} needs --data DIR (where its files are)",
                    kind.as_str()
                ))
            }
        }
    };
    if !root.exists() {
        let how = match (kind, given) {
            (DatasetKind::FashionMnist, false) => {
                "install it with `sudo apt-get install dataset-fashion-mnist`, or pass --data DIR with the IDX files"
            }
            _ => "pass --data with an existing path",
        };
        return Err(missing(kind, &root, how));
    }
    let (train, test) = match kind {
        DatasetKind::FashionMnist => (
            idx::load_fashion_mnist(&root, Split::Train)?,
            Some(idx::load_fashion_mnist(&root, Split::Test)?),
        ),
        DatasetKind::Mnist => (
            idx::load_mnist(&root, Split::Train, false)?,
            idx::load_mnist(&root, Split::Test, false).ok(),
        ),
        DatasetKind::Cifar10 => (
            cifar::load_cifar10(&root, Split::Train)?,
            Some(cifar::load_cifar10(&root, Split::Test)?),
        ),
        DatasetKind::Images => {
            let opts = FolderOptions {
                size: (image_size, image_size),
                color: ColorMode::Rgb,
                layout: FolderLayout::Auto,
            };
            let (tr, te) = (root.join("train"), root.join("test"));
            if tr.is_dir() {
                let test = if te.is_dir() {
                    Some(load_image_folder(&te, opts)?)
                } else {
                    None
                };
                (load_image_folder(&tr, opts)?, test)
            } else {
                (load_image_folder(&root, opts)?, None)
            }
        }
        DatasetKind::Text => return input("internal: text is not an image dataset"),
    };
    let normalize = if kind == DatasetKind::FashionMnist {
        Normalize::fashion_mnist()
    } else {
        channel_stats(&train)
    };
    Ok(ImageData {
        train,
        test,
        normalize,
    })
}

/// Per-channel mean and standard deviation of the pixels (scaled to [0, 1]).
pub fn channel_stats(d: &ImageDataset) -> Normalize {
    let plane = d.height * d.width;
    let mut sum = vec![0f64; d.channels];
    let mut sq = vec![0f64; d.channels];
    for (i, &p) in d.pixels.iter().enumerate() {
        let c = (i / plane) % d.channels;
        let v = f64::from(p) / 255.0;
        sum[c] += v;
        sq[c] += v * v;
    }
    let n = (d.len * plane).max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std: Vec<f32> = sum
        .iter()
        .zip(&sq)
        .map(|(s, q)| ((q / n - (s / n).powi(2)).max(1e-6)).sqrt() as f32)
        .collect();
    Normalize { mean, std }
}

/// Loads a text corpus: the fortunes corpus (Debian's `fortunes` package, or `--data DIR` of
/// fortune files), or any UTF-8 file / folder of files (every 10th paragraph held out).
pub fn load_text(data: &str) -> Result<TextData> {
    let path = if data.is_empty() {
        PathBuf::from(text::DEBIAN_FORTUNES_DIR)
    } else {
        PathBuf::from(data)
    };
    if !path.exists() {
        let how = if data.is_empty() {
            "install it with `sudo apt-get install fortunes`, or pass --data FILE|DIR with UTF-8 text"
        } else {
            "pass --data with an existing text file or folder"
        };
        return Err(missing(DatasetKind::Text, &path, how));
    }
    if path.is_dir() && (data.is_empty() || path.join("fortunes").is_file()) {
        let c = text::fortunes_corpus(&path)?;
        return Ok(TextData {
            train: c.train,
            validation: c.validation,
        });
    }
    let docs: Vec<String> = text::read_texts(&path, &[".dat", ".u8"])?
        .into_iter()
        .flat_map(|(_, t)| text::split_documents(&t))
        .collect();
    if docs.len() < 2 {
        return input(format!(
            "{}: needs at least two paragraphs (separated by blank lines) to hold one out for validation",
            path.display()
        ));
    }
    let (train, val) = text::train_val_split(&docs, 0.1);
    Ok(TextData {
        train: train.join("\n\n"),
        validation: val.join("\n\n"),
    })
}

/// The character vocabulary of a corpus (specials first).
pub fn vocab_for(t: &TextData) -> Vocab {
    let mut all = t.train.clone();
    all.push_str(&t.validation);
    Vocab::chars_from_text(specials(), &all)
}
