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
