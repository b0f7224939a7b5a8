//! The methods, one file each, and [`build`], which makes any of them from a [`MethodConfig`].

mod simclr;

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
        other => return config(format!("method {other} is not built yet")),
    })
}
