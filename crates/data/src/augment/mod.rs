//! Image augmentations on `f32` CHW images in `[0, 1]`.
//!
//! Every random transform takes a [`Philox`](selfsup_tensor::rng::Philox) stream: the loader gives
//! each sample its own stream derived from `(seed, epoch, sample index)`, so results do not depend
//! on thread count or batch order. The functions here work on one image; [`crate::views`]
//! chains them into configurable view pipelines and fuses crop, resize and flip.

pub mod blur;
pub mod color;
pub mod crop;
pub mod erase;
pub mod geometry;
pub mod normalize;
pub mod resize;

pub use blur::{gaussian_blur, gaussian_kernel};
pub use color::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, solarize, to_grayscale,
    ColorJitter,
};
pub use crop::{resized_crop, CropBox, RandomResizedCrop};
pub use erase::{erase, gaussian_noise, RandomErasing};
pub use geometry::{hflip, rot90, rotate};
pub use normalize::Normalize;
pub use resize::{resize_bilinear, resize_u8};
