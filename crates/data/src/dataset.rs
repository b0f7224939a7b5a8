//! In-memory image datasets (`u8` pixels, CHW per image) and float image buffers.

use crate::error::{DataError, Result};

/// Which part of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training split (60,000 images for (Fashion-)MNIST, 50,000 for CIFAR).
    Train,
    /// The test split (10,000 images).
    Test,
}

/// A set of images of one shape, kept as `u8` in memory, each image channel-major (CHW), with
/// optional integer labels.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDataset {
    /// All pixels, image after image, each `channels * height * width` bytes in CHW order.
    pub pixels: Vec<u8>,
    /// Number of images.
    pub len: usize,
    /// Channels per image (1 = grayscale, 3 = RGB).
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// One label per image (class index), if the dataset is labelled.
    pub labels: Option<Vec<i64>>,
    /// Class names, index = label, when known.
    pub class_names: Vec<String>,
}

impl ImageDataset {
    /// Builds a dataset, checking that the buffer sizes agree with the shape.
    pub fn new(
        pixels: Vec<u8>,
        shape: [usize; 4],
        labels: Option<Vec<i64>>,
        class_names: Vec<String>,
    ) -> Result<Self> {
        let [n, c, h, w] = shape;
        if n.checked_mul(c)
            .and_then(|x| x.checked_mul(h))
            .and_then(|x| x.checked_mul(w))
            != Some(pixels.len())
        {
            return Err(DataError::invalid(
                "dataset shape",
                format!("{} pixels do not fill shape {shape:?}; pass the shape the buffer was made with", pixels.len()),
            ));
        }
        if let Some(l) = &labels {
            if l.len() != n {
                return Err(DataError::invalid(
                    "dataset labels",
                    format!(
                        "{} labels for {n} images; pass one label per image",
                        l.len()
                    ),
                ));
            }
        }
        Ok(ImageDataset {
            pixels,
            len: n,
            channels: c,
            height: h,
            width: w,
            labels,
            class_names,
        })
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The pixels of image `i` (CHW). Panics if `i >= len`, like slice indexing.
    pub fn image(&self, i: usize) -> ImageRef<'_> {
        let n = self.image_len();
        ImageRef {
            pixels: &self.pixels[i * n..(i + 1) * n],
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }

    /// Number of classes: the number of class names, or `max label + 1`, or 0 when unlabelled.
    pub fn num_classes(&self) -> usize {
        let from_labels = self
            .labels
            .as_ref()
            .and_then(|l| l.iter().max())
            .map_or(0, |&m| m as usize + 1);
        from_labels.max(self.class_names.len())
    }

    /// A new dataset holding the images at `indices` (in that order), e.g. a few-label subset.
    pub fn select(&self, indices: &[usize]) -> Result<ImageDataset> {
        let n = self.image_len();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            if i >= self.len {
                return Err(DataError::invalid(
                    "subset index",
                    format!(
                        "index {i} is out of range for a dataset of {} images",
                        self.len
                    ),
                ));
            }
            pixels.extend_from_slice(&self.pixels[i * n..(i + 1) * n]);
        }
        let labels = self
            .labels
            .as_ref()
            .map(|l| indices.iter().map(|&i| l[i]).collect());
        Ok(ImageDataset {
            pixels,
            len: indices.len(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            labels,
            class_names: self.class_names.clone(),
        })
    }
}

/// A borrowed `u8` image, CHW.
#[derive(Clone, Copy, Debug)]
pub struct ImageRef<'a> {
    /// The pixels, `channels * height * width` bytes.
    pub pixels: &'a [u8],
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

/// An owned `f32` image, CHW, values usually in `[0, 1]` before normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// The values, `channels * height * width`, CHW.
    pub data: Vec<f32>,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
}

impl Image {
    /// An image from CHW values; panics if the length does not match the shape (programming error).
    pub fn new(data: Vec<f32>, channels: usize, height: usize, width: usize) -> Self {
        assert_eq!(
            data.len(),
            channels * height * width,
            "Image::new: data length does not match shape"
        );
        Image {
            data,
            channels,
            height,
            width,
        }
    }

    /// A zero image.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        Image {
            data: vec![0.0; channels * height * width],
            channels,
            height,
            width,
        }
    }

    /// Converts `u8` pixels to `[0, 1]` floats (`x / 255`).
    pub fn from_u8(img: ImageRef<'_>) -> Self {
        Image {
            data: img
                .pixels
                .iter()
                .map(|&p| p as f32 * (1.0 / 255.0))
                .collect(),
            channels: img.channels,
            height: img.height,
            width: img.width,
        }
    }

    /// The value at channel `c`, row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Number of pixels per channel.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }
}

/// A batch of images as one NCHW `f32` buffer (ready for `Tensor::from_vec(data, &shape)`).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageBatch {
    /// The values, `shape.iter().product()` of them, NCHW.
    pub data: Vec<f32>,
    /// `[batch, channels, height, width]`.
    pub shape: [usize; 4],
}

impl ImageBatch {
    /// The batch as an f32 tensor of shape `[batch, channels, height, width]` (moves the buffer).
    pub fn into_tensor(self) -> selfsup_tensor::Result<selfsup_tensor::Tensor> {
        selfsup_tensor::Tensor::from_vec(self.data, &self.shape)
    }

    /// The values of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.shape[1] * self.shape[2] * self.shape[3];
        &self.data[i * n..(i + 1) * n]
    }
}
