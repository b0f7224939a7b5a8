//! Encoders that SSL methods wrap. Each reports its output width, parameter count and FLOPs
//! per sample.

mod small_cnn;

pub use small_cnn::SmallCnn;
