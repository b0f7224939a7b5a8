//! The methods, one file each, and [`build`], which makes any of them from a [`MethodConfig`].

mod cpc;
mod gpt;
mod mae;
mod mlm;
mod simclr;
mod simmim;

pub use cpc::{Cpc, CpcHead};
pub use gpt::Gpt;
pub use mae::{patchify, Mae, MaeDecoder, MaeOutput};
pub use mlm::{Mlm, MlmOutput, MASK_ID, PAD_ID};
pub use simclr::Simclr;
pub use simmim::{Simmim, SimmimHead, SimmimOutput};

use selfsup_tensor::Generator;

use crate::config::{MethodConfig, MethodName};
use crate::error::{config, Result};
use crate::method::SslMethod;

/// Builds the method `cfg.method` names, after [`MethodConfig::validate`].
pub fn build(cfg: &MethodConfig, g: &mut Generator) -> Result<Box<dyn SslMethod>> {
    cfg.validate()?;
    Ok(match cfg.method {
        MethodName::Simclr => Box::new(Simclr::new(cfg, g)?),
        MethodName::Mae => Box::new(Mae::new(cfg, g)?),
        MethodName::Simmim => Box::new(Simmim::new(cfg, g)?),
        MethodName::Mlm => Box::new(Mlm::new(cfg, g)?),
        MethodName::Gpt => Box::new(Gpt::new(cfg, g)?),
        MethodName::Cpc => Box::new(Cpc::new(cfg, g)?),
        other => return config(format!("method {other} is not built yet")),
    })
}
