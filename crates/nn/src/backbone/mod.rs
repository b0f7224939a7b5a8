//! Encoders that SSL methods wrap. Each reports its output width, parameter count and FLOPs
//! per sample.

mod resnet;
mod small_cnn;
mod text;
mod vit;

pub use resnet::{BasicBlock, ResNet};
pub use small_cnn::SmallCnn;
pub use text::{TextConfig, TextTransformer};
pub use vit::{Vit, VitConfig};
