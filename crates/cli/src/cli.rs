//! The command line: subcommands and their flags (`selfsup --help`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use selfsup_ssl::MethodName;
use serde::de::DeserializeOwned;

use crate::runconfig::DatasetKind;

/// Self-supervised pretraining and few-label evaluation on a tensor engine of our own.
#[derive(Parser, Debug)]
#[command(name = "selfsup", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain an encoder with an SSL method; writes a run directory.
    Pretrain(PretrainArgs),
    /// Evaluate a pretrained encoder (kNN, linear probe, fine-tuning) on the test split.
    Eval(EvalArgs),
    /// The baselines with the same label budget: logistic regression on pixels, and the
    /// backbone trained supervised from scratch.
    Baseline(BaselineArgs),
    /// Sample text from a GPT-style run.
    Generate(GenerateArgs),
    /// Pretrain SimCLR on Fashion-MNIST, evaluate with few labels against the baselines, print
    /// one table (about 5 minutes on 2 cores).
    Quickstart(QuickstartArgs),
    /// The reference workloads, as JSON lines.
    Bench(BenchArgs),
}

/// Flags of `pretrain` (each overrides the config file).
#[derive(Args, Debug, Default)]
pub struct PretrainArgs {
    /// TOML config file with any of the options (see configs/).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// SSL method: simclr, moco-v2, moco-v3, byol, simsiam, barlow-twins, vicreg, dino, cpc,
    /// mae, simmim, mlm, gpt, rotation, relative-position, jigsaw, colorization.
    #[arg(long)]
    pub method: Option<String>,
    /// Encoder architecture: small-cnn, resnet18, vit, text.
    #[arg(long)]
    pub backbone: Option<String>,
    /// Dataset.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetKind>,
    /// Where the dataset is (default: Debian's package location for fashion-mnist and text).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimiser: adam, adamw, sgd, lars.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Device to train on: cpu, cuda (GPU 0) or cuda:N (default cpu). A missing GPU is an
    /// error that says why (no driver, no NVRTC, no such device).
    #[arg(long)]
    pub device: Option<String>,
    /// Precision of the products: f32, tf32 or bf16 (f32 accumulation and weights; pays on a
    /// GPU, and bf16 on CPUs with AVX-512 BF16; elsewhere the CPU only rounds).
    #[arg(long)]
    pub precision: Option<String>,
    /// Learning-rate schedule: cosine, constant.
    #[arg(long)]
    pub schedule: Option<String>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Stop after N steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Pretrain on N random images (or N characters of text).
    #[arg(long)]
    pub subset: Option<usize>,
    /// Save a checkpoint every N steps.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Run directory to write.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory exactly where it stopped.
    #[arg(long, conflicts_with_all = ["config", "method", "out"])]
    pub resume: Option<PathBuf>,
    /// Stop after step N, keeping the checkpoint, as if interrupted (continue with --resume).
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// Skip the per-epoch kNN / linear monitor.
    #[arg(long)]
    pub no_monitor: bool,
}

/// The evaluation protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Weighted kNN on frozen features.
    Knn,
    /// Logistic regression on frozen features.
    Linear,
    /// Fine-tuning (whole network or top layers).
    Finetune,
}

/// Flags of `eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory of `selfsup pretrain` (or a checkpoint file inside one).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Protocol.
    #[arg(long, value_enum, default_value = "linear")]
    pub protocol: Protocol,
    /// Output directory (default: CHECKPOINT/eval-PROTOCOL[-K]).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Labelled images per class drawn (stratified, seeded) from the training split; all when
    /// omitted.
    #[arg(long)]
    pub labels_per_class: Option<usize>,
    /// Seed of the label draw and of fine-tuning.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// kNN neighbours.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// kNN temperature.
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
    /// kNN: choose k and the temperature on a validation split of the labelled images (10%,
    /// stratified; k in 1..200, T in 0.002..0.2) instead of --k/--temperature.
    #[arg(long)]
    pub tune_knn: bool,
    /// kNN: subtract the mean training feature before the cosine similarity.
    #[arg(long)]
    pub center: bool,
    /// Fine-tuning: epochs at most (early stopping on a validation split of the labels).
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Fine-tuning: learning rate of the head (the encoder gets lr * encoder-lr-scale).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Fine-tuning: encoder learning rate as a fraction of --lr.
    #[arg(long, default_value_t = 0.1)]
    pub encoder_lr_scale: f64,
    /// Fine-tuning: `none`, `all` (head only) or `lower:N` (freeze the first N stages).
    #[arg(long, default_value = "none")]
    pub freeze: String,
    /// Fine-tuning: train on augmented views.
    #[arg(long)]
    pub augment: bool,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Dataset location override (default: the run's).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// Which baselines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Logistic regression on standardised pixels.
    Pixels,
    /// The backbone trained supervised from scratch.
    Supervised,
    /// Both.
    Both,
}

/// Flags of `baseline`.
#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// Which baselines.
    #[arg(long, value_enum, default_value = "both")]
    pub which: Which,
    /// Dataset.
    #[arg(long, value_enum, default_value = "fashion-mnist")]
    pub dataset: DatasetKind,
    /// Dataset location.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Labelled images per class (all when omitted).
    #[arg(long)]
    pub labels_per_class: Option<usize>,
    /// Seed of the label draw and training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Supervised: backbone (small-cnn, resnet18, vit).
    #[arg(long, default_value = "small-cnn")]
    pub backbone: String,
    /// Supervised: SmallCnn widths, one block each (e.g. `32,64,128,256`; default the
    /// reference `32,64,128`): use the SSL run's to compare like with like.
    #[arg(long, value_delimiter = ',')]
    pub widths: Option<Vec<usize>>,
    /// Supervised: epochs (cosine learning-rate decay over them; the weights of the best
    /// validation epoch are kept).
    #[arg(long, default_value_t = 200)]
    pub epochs: usize,
    /// Supervised: at least this many optimiser steps (more epochs when the labelled set is
    /// small).
    #[arg(long, default_value_t = 800)]
    pub min_steps: usize,
    /// Supervised: train on the SSL augmentations.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub augment: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Flags of `generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Run directory of a `gpt` pretraining run.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 300)]
    pub tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Flags of `quickstart`.
#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Fashion-MNIST location (default: Debian's package location).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// Labelled images per class for the evaluation (10: the few-label regime where SSL
    /// pays; docs/results.md has 30 and 100 too).
    #[arg(long, default_value_t = 10)]
    pub labels_per_class: usize,
    /// Pretraining steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Device for pretraining and feature extraction: cpu, cuda or cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of the pretraining's products: f32, tf32 or bf16 (default f32).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Worker threads.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The reference workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// f32 matrix multiply, n = 256, 512, 1024, 2048.
    Sgemm,
    /// One SimCLR training step, SmallCnn, 256 images.
    SimclrStep,
    /// One char-level GPT training step, 4 layers, d=128, context 128, batch 32.
    GptStep,
}

/// Flags of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workload.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Threads.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed repetitions (after warm-up); sgemm scales them with the size as the PyTorch
    /// reference does (x5 / x3 / x1.5 / x0.7 at n <= 256 / 512 / 1024 / larger).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// sgemm sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [256usize, 512, 1024, 2048])]
    pub sizes: Vec<usize>,
    /// Device: cpu, cuda or cuda:N (timings wait for the GPU to finish each repetition).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of the f32 products: f32, tf32 or bf16 (f32 accumulation; on the CPU bf16 runs
    /// on AVX-512 BF16 where the CPU has it; otherwise the operands are only rounded, no faster).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// gpt-step model: `mini` (the reference, 4 layers, d=128, context 128, vocab 96) or `gpt2`
    /// (12 layers, 12 heads, d=768, context 1024, vocab 50304, tied head: 124M parameters).
    #[arg(long, value_enum, default_value_t = GptSize::Mini)]
    pub model: GptSize,
    /// Per step: images for simclr-step (default 256), sequences for gpt-step (default 32 for
    /// mini, 8 for gpt2).
    #[arg(long)]
    pub batch: Option<usize>,
    /// simclr-step encoder: `small-cnn` (the reference) or `resnet18` (the CIFAR ResNet-18:
    /// 3x3 stem, no max-pool, 11.2M parameters).
    #[arg(long, default_value = "small-cnn")]
    pub backbone: String,
    /// gpt-step attention on a GPU: `fused` (the flash-style kernels) or `composed` (matmuls
    /// at --precision and a softmax over stored T x T scores), to compare the two.
    #[arg(long, default_value = "fused")]
    pub attention: String,
    /// On a GPU: `fused` (gpt-step at bf16: the MLP's activation and the output head's loss
    /// gradient written straight to bf16, `Tensor::mlp2`, `Tensor::linear_cross_entropy`;
    /// simclr-step: convolutions with per-image forward GEMMs into the output's layout and the
    /// weight gradient's long reduction cut into slices) or `composed` (the ops they stand for;
    /// each convolution's products as single GEMMs over all columns), to measure what they buy.
    #[arg(long, default_value = "fused")]
    pub fusion: String,
    /// simclr-step on a GPU at `--precision bf16`: `im2col` (column matrices and cuBLAS GEMMs)
    /// or `implicit` (implicit GEMM on the tensor cores, no column matrices), to compare the
    /// two.
    #[arg(long, default_value = "im2col")]
    pub conv: String,
    /// On a GPU, after the timed repetitions: one more step with every kernel launch and
    /// cuBLAS call timed, printed as a `gpu-profile` line (device time by kernel, longest
    /// first; and for gpt-step how long the host took to queue the step).
    #[arg(long)]
    pub profile: bool,
}

/// The GPT configurations of `bench gpt-step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GptSize {
    /// The reference char-level GPT of shared/README.md.
    Mini,
    /// GPT-2 small (124M) with vocab 50304, as in the GPU target of issue 7.
    Gpt2,
}

/// Parses a method name with the library's did-you-mean message.
pub fn parse_method(s: &str) -> crate::error::Result<MethodName> {
    s.parse()
        .map_err(|e: selfsup_ssl::SslError| crate::error::CliError::Input(format!("--method: {e}")))
}

/// Parses a kebab-case name into one of the library's enums (`flag` names the option in the
/// error, `names` lists the choices for the did-you-mean).
pub fn parse_enum<T: DeserializeOwned>(
    flag: &str,
    s: &str,
    names: &[&str],
) -> crate::error::Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        let hint = match selfsup_ssl::config::did_you_mean(s, names) {
            Some(m) => format!("did you mean `{m}`?"),
            None => format!("use one of {}", names.join(", ")),
        };
        crate::error::CliError::Input(format!("{flag}: unknown value `{s}`; {hint}"))
    })
}
