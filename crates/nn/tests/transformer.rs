//! Transformer pieces: the reference GPT's parameter count, dropout modes and RNG states.

use selfsup_nn::{
    Activation, Embedding, LayerNorm, LearnedPositionalEmbedding, Linear, Module, TransformerBlock,
};
use selfsup_tensor::{DType, Generator, Tensor};

#[test]
fn reference_gpt_has_834304_parameters() {
    // shared/README.md: vocab 96, context 128, 4 pre-LN blocks, 4 heads, d 128, MLP 4x GELU,
    // learned positions, final LayerNorm, untied output head without bias.
    let mut g = Generator::new(0);
    let (v, t, d) = (96, 128, 128);
    let mut n = Embedding::new(v, d, DType::F32, &mut g)
        .unwrap()
        .num_params();
    n += LearnedPositionalEmbedding::new(t, d, DType::F32, &mut g)
        .unwrap()
        .num_params();
    for _ in 0..4 {
        n += TransformerBlock::new(d, 4, 4, Activation::Gelu, DType::F32, &mut g)
            .unwrap()
            .num_params();
    }
    n += LayerNorm::new(d, DType::F32).num_params();
    n += Linear::new(d, v, false, DType::F32, &mut g)
        .unwrap()
        .num_params();
    assert_eq!(n, 834_304);
}

#[test]
fn dropout_is_active_in_training_only_and_its_stream_is_named() {
    let mut g = Generator::new(1);
    let mut block = TransformerBlock::new(8, 2, 2, Activation::Gelu, DType::F32, &mut g)
        .unwrap()
        .with_dropout(0.5, &mut g)
        .unwrap();
    let x = Tensor::randn(&[2, 4, 8], 0.0, 1.0, DType::F32, &mut g).unwrap();
    let a = block
        .forward(&x, true, None)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let b = block
        .forward(&x, true, None)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_ne!(a, b, "two training passes draw different masks");
    let mut names = Vec::new();
    block.visit_rng("blocks.0", &mut |n, _| names.push(n));
    assert_eq!(
        names,
        [
            "blocks.0.attn.dropout.generator",
            "blocks.0.resid_dropout.generator"
        ]
    );
    block.eval();
    let c = block
        .forward(&x, true, None)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let d = block
        .forward(&x, true, None)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(c, d);
}

/// The residual forms give `residual + layer(x)` shaped as the residual, and name a residual
/// that does not have the output's shape (the two-layer MLP's fused form, a three-layer MLP's
/// composed one, and the attention's projection).
#[test]
fn residual_forms_add_the_residual_and_name_one_that_does_not_fit() {
    use selfsup_nn::{Mlp, MlpConfig, MultiHeadAttention};
    let g = &mut Generator::new(3);
    let x = Tensor::randn(&[2, 3, 8], 0.0, 1.0, DType::F64, g).unwrap();
    let r = Tensor::randn(&[2, 3, 8], 0.0, 1.0, DType::F64, g).unwrap();
    let bad = Tensor::zeros(&[2, 3, 5], DType::F64);
    // The residual form's values are the plain form's plus the residual, bit for bit, and
    // a residual of another shape is named in the error.
    let check = |y: Tensor, plain: Tensor, e: selfsup_nn::NnError, says: &str| {
        let want = plain.add(&r).unwrap();
        assert_eq!(y.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
        let e = e.to_string();
        assert!(e.contains(says), "{e}");
    };
    let lin = Linear::new(8, 8, true, DType::F64, g).unwrap();
    check(
        lin.forward_residual(&x, &r).unwrap(),
        lin.forward(&x).unwrap(),
        lin.forward_residual(&x, &bad).unwrap_err(),
        "Linear: residual [2, 3, 5] does not fit the output [2, 3, 8]",
    );
    for layers in [2, 3] {
        let mut cfg = MlpConfig::new(8, 16, 8, layers);
        cfg.activation = Activation::Gelu;
        let mlp = Mlp::new(&cfg, DType::F64, g).unwrap();
        check(
            mlp.forward_residual(&x, &r).unwrap(),
            mlp.forward(&x).unwrap(),
            mlp.forward_residual(&x, &bad).unwrap_err(),
            "Mlp: residual [2, 3, 5] does not fit the output [2, 3, 8]",
        );
    }
    let attn = MultiHeadAttention::new(8, 2, true, DType::F64, g).unwrap();
    check(
        attn.forward_residual(&x, true, None, &r).unwrap(),
        attn.forward(&x, true, None).unwrap(),
        attn.forward_residual(&x, true, None, &bad).unwrap_err(),
        "residual [2, 3, 5] does not fit",
    );
}
