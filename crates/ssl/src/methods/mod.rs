//! The methods, one file each, and [`build`], which makes any of them from a [`MethodConfig`].

mod colorization;
mod jigsaw;
mod relative_position;
mod rotation;
mod simclr;

pub use colorization::{upsample_nearest, ChromaDecoder, Colorization};
pub use jigsaw::{sample_puzzles, Jigsaw};
pub use relative_position::{sample_pairs, RelativePosition};
pub use rotation::Rotation;
pub use simclr::Simclr;

use selfsup_tensor::Generator;

use crate::config::{MethodConfig, MethodName};
use crate::error::{config, Result};
use crate::method::SslMethod;

/// Builds the method `cfg.method` names, after [`MethodConfig::validate`].
pub fn build(cfg: &MethodConfig, g: &mut Generator) -> Result<Box<dyn SslMethod>> {
    cfg.validate()?;
    Ok(match cfg.method {
        MethodName::Simclr => Box::new(Simclr::new(cfg, g)?),
        MethodName::Rotation => Box::new(Rotation::new(cfg, g)?),
        MethodName::RelativePosition => Box::new(RelativePosition::new(cfg, g)?),
        MethodName::Jigsaw => Box::new(Jigsaw::new(cfg, g)?),
        MethodName::Colorization => Box::new(Colorization::new(cfg, g)?),
        other => return config(format!("method {other} is not built yet")),
    })
}
