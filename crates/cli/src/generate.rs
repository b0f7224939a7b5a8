//! `selfsup generate`: samples text from a GPT-style run.

use selfsup_data::vocab::Vocab;
use selfsup_tensor::Generator;

use crate::cli::GenerateArgs;
use crate::error::{input, Result};
use crate::evaluate::load_method;
use crate::pretrain::{run_dir, VOCAB};
use crate::runconfig::load_run_config;

/// Samples `args.tokens` characters after `args.prompt` and returns the whole text.
pub fn generate(args: &GenerateArgs) -> Result<String> {
    let dir = run_dir(&args.checkpoint)?;
    let cfg = load_run_config(&dir)?;
    if cfg.method != selfsup_ssl::MethodName::Gpt {
        return input(format!(
            "{} is a {} run: generate needs a gpt run (`selfsup pretrain --method gpt --dataset text`)",
            dir.display(),
            cfg.method
        ));
    }
    let vocab = Vocab::load(&dir.join(VOCAB))?;
    let method = load_method(&dir, &cfg)?;
    let Some(model) = method.encoder().as_text() else {
        return input("internal: a gpt run without a text model");
    };
    let prompt = if args.prompt.is_empty() {
        vec![vocab.encode("\n")?[0]]
    } else {
        vocab.encode(&args.prompt).map_err(|e| {
            crate::error::CliError::Input(format!(
                "--prompt: {e}; use only characters the model was trained on"
            ))
        })?
    };
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return input(format!(
            "--temperature {} must be 0 (greedy) or positive",
            args.temperature
        ));
    }
    let mut g = Generator::new(args.seed);
    let top_k = (args.top_k > 0).then_some(args.top_k);
    let ids =
        selfsup_ssl::sample::sample(model, &prompt, args.tokens, args.temperature, top_k, &mut g)?;
    Ok(vocab.decode(&ids))
}
