//! The methods, one file each, and [`build`], which makes any of them from a [`MethodConfig`].

mod barlow_twins;
mod byol;
mod colorization;
mod dino;
mod jigsaw;
mod moco_v2;
mod moco_v3;
mod momentum;
mod relative_position;
mod rotation;
mod simclr;
mod simsiam;
mod vicreg;

pub use barlow_twins::BarlowTwins;
pub use byol::Byol;
pub use colorization::{upsample_nearest, ChromaDecoder, Colorization};
pub use dino::{dino_local_size, Dino, DinoHead, DinoTeacher};
pub use jigsaw::{sample_puzzles, Jigsaw};
pub use moco_v2::MocoV2;
pub use moco_v3::MocoV3;
pub use momentum::MomentumBranch;
pub use relative_position::{sample_pairs, RelativePosition};
pub use rotation::Rotation;
pub use simclr::Simclr;
pub use simsiam::Simsiam;
pub use vicreg::Vicreg;
mod cpc;
mod gpt;
mod mae;
mod mlm;
mod simmim;
pub use cpc::{Cpc, CpcHead};
pub use gpt::Gpt;
pub use mae::{patchify, Mae, MaeDecoder, MaeOutput};
pub use mlm::{Mlm, MlmOutput, MASK_ID, PAD_ID};
pub use simmim::{Simmim, SimmimHead, SimmimOutput};

use selfsup_tensor::Generator;

use crate::config::{MethodConfig, MethodName};
use crate::error::Result;
use crate::method::SslMethod;

/// Builds the method `cfg.method` names, after [`MethodConfig::validate`].
pub fn build(cfg: &MethodConfig, g: &mut Generator) -> Result<Box<dyn SslMethod>> {
    cfg.validate()?;
    Ok(match cfg.method {
        MethodName::Simclr => Box::new(Simclr::new(cfg, g)?),
        MethodName::MocoV2 => Box::new(MocoV2::new(cfg, g)?),
        MethodName::MocoV3 => Box::new(MocoV3::new(cfg, g)?),
        MethodName::Byol => Box::new(Byol::new(cfg, g)?),
        MethodName::Simsiam => Box::new(Simsiam::new(cfg, g)?),
        MethodName::BarlowTwins => Box::new(BarlowTwins::new(cfg, g)?),
        MethodName::Vicreg => Box::new(Vicreg::new(cfg, g)?),
        MethodName::Dino => Box::new(Dino::new(cfg, g)?),
        MethodName::Mae => Box::new(Mae::new(cfg, g)?),
        MethodName::Simmim => Box::new(Simmim::new(cfg, g)?),
        MethodName::Mlm => Box::new(Mlm::new(cfg, g)?),
        MethodName::Gpt => Box::new(Gpt::new(cfg, g)?),
        MethodName::Cpc => Box::new(Cpc::new(cfg, g)?),
        MethodName::Rotation => Box::new(Rotation::new(cfg, g)?),
        MethodName::RelativePosition => Box::new(RelativePosition::new(cfg, g)?),
        MethodName::Jigsaw => Box::new(Jigsaw::new(cfg, g)?),
        MethodName::Colorization => Box::new(Colorization::new(cfg, g)?),
    })
}
