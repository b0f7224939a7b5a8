//! Self-supervised losses, one file each.

mod barlow_twins;
mod byol;
mod common;
mod cpc;
mod dino;
mod info_nce;
mod masked;
mod negative_cosine;
mod nt_xent;
mod vicreg;

pub use barlow_twins::{barlow_twins, BARLOW_EPS};
pub use byol::byol_loss;
pub use cpc::{cpc_info_nce, info_nce_logits};
pub use dino::{dino_center, dino_loss};
pub use info_nce::{info_nce_batch, info_nce_queue};
pub use masked::{
    masked_patch_mse, masked_pixel_loss, masked_token_ce, norm_pix_target, IGNORE_INDEX,
};
pub use negative_cosine::negative_cosine;
pub use nt_xent::nt_xent;
pub use vicreg::{vicreg, VicregTerms, VicregWeights, VICREG_EPS};
