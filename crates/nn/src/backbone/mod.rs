//! Encoders that SSL methods wrap. Each reports its output width, parameter count and FLOPs
//! per sample.

mod resnet;
mod small_cnn;
mod text;

pub use resnet::{BasicBlock, ResNet};
pub use small_cnn::SmallCnn;
pub use text::{TextConfig, TextTransformer};
