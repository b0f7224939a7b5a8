//! Self-supervised losses, one file each.

mod cpc;
mod masked;
mod nt_xent;

pub use cpc::{cpc_info_nce, info_nce_logits};
pub use masked::{
    masked_patch_mse, masked_pixel_loss, masked_token_ce, norm_pix_target, IGNORE_INDEX,
};
pub use nt_xent::nt_xent;
