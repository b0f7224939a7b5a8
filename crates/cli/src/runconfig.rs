//! The run configuration: one TOML document (`--config FILE`, saved resolved as `config.toml` in
//! every run directory) with every option of `pretrain`; command-line flags override it.
//!
//! Resolution order: the method's published defaults ([`RunConfig::defaults`]), then the file,
//! then the flags. Unknown keys are errors with a did-you-mean; values must have the type of
//! the default they replace.

use std::path::{Path, PathBuf};

use selfsup_data::augment::normalize::Normalize;
use selfsup_data::augment::{ColorJitter, RandomResizedCrop};
use selfsup_data::ViewConfig;
use selfsup_ssl::config::did_you_mean;
use selfsup_ssl::{BackboneConfig, BackboneKind, MethodConfig, MethodName, OptimConfig};
use serde::{Deserialize, Serialize};

use crate::error::{input, io, Result};

/// The datasets `--dataset` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST IDX files (Debian's `dataset-fashion-mnist` location by default).
    FashionMnist,
    /// MNIST IDX files (`--data DIR`).
    Mnist,
    /// CIFAR-10 binary batches (`--data DIR`).
    Cifar10,
    /// A folder of images, one subfolder per class (`--data DIR`).
    Images,
    /// Plain text: the fortunes corpus by default, or `--data FILE|DIR`.
    Text,
}

impl DatasetKind {
    /// The name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Images => "images",
            DatasetKind::Text => "text",
        }
    }

    /// Channels and side of the images (text: none).
    pub fn image_shape(self) -> (usize, usize) {
        match self {
            DatasetKind::FashionMnist | DatasetKind::Mnist => (1, 28),
            DatasetKind::Cifar10 | DatasetKind::Images => (3, 32),
            DatasetKind::Text => (0, 0),
        }
    }
}

/// Training-loop settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the data (text: over the training characters in windows).
    pub epochs: u64,
    /// Images (or text windows) per step.
    pub batch_size: usize,
    /// Stop after this many steps (0: no cap); the schedule spans the capped run.
    pub max_steps: u64,
    /// Pretrain on this many random images / characters of text (0: all).
    pub subset: usize,
    /// Save `checkpoint.safetensors` every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Write a log line every this many steps.
    pub log_every: u64,
    /// Where to train: `cpu`, `cuda` (GPU 0) or `cuda:N`. Data loading and augmentation stay
    /// on the CPU; each batch is moved to the device.
    pub device: String,
    /// Precision of the products in matmul, linear and conv: `f32`, `tf32` or `bf16` (operands
    /// rounded, f32 accumulation; weights, gradients and optimiser state stay f32). TF32 and
    /// bf16 use the GPU's tensor cores; on the CPU they only round (no faster).
    pub precision: String,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch_size: 256,
            max_steps: 0,
            subset: 0,
            checkpoint_every: 200,
            log_every: 10,
            device: "cpu".into(),
            precision: "f32".into(),
        }
    }
}

/// The augmentation of training views (images). Defaults follow the method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random resized crop: smallest area fraction (0 disables the crop).
    pub crop_min: f64,
    /// Random resized crop: largest area fraction.
    pub crop_max: f64,
    /// Horizontal flip probability.
    pub hflip: f64,
    /// Probability of colour jitter.
    pub jitter_p: f64,
    /// Brightness jitter strength (factor in `[1-b, 1+b]`).
    pub brightness: f64,
    /// Contrast jitter strength.
    pub contrast: f64,
    /// Saturation jitter strength (RGB).
    pub saturation: f64,
    /// Hue jitter strength (RGB, at most 0.5).
    pub hue: f64,
    /// Probability of converting to grayscale (RGB).
    pub grayscale: f64,
    /// Probability of a gaussian blur (kernel ~10% of the side, sigma 0.1-2).
    pub blur_p: f64,
    /// Probability of solarisation at 0.5.
    pub solarize_p: f64,
}

impl Default for AugmentConfig {
    /// The stronger SimCLR recipe for Fashion-MNIST (crop 0.3-1, flip, brightness/contrast).
    fn default() -> Self {
        AugmentConfig::from_view(&ViewConfig::simclr_fashion_mnist_jitter())
    }
}

impl AugmentConfig {
    /// The settings of a [`ViewConfig`] (its crop, flip, jitter, grayscale, blur, solarize).
    pub fn from_view(v: &ViewConfig) -> Self {
        let (crop_min, crop_max) = v.crop.map(|c| c.scale).unwrap_or((0.0, 1.0));
        let (jitter_p, j) = v
            .jitter
            .unwrap_or((0.0, ColorJitter::new(0.0, 0.0, 0.0, 0.0)));
        let strength = |r: Option<(f32, f32)>| r.map(|(_, hi)| f64::from(hi) - 1.0).unwrap_or(0.0);
        AugmentConfig {
            crop_min,
            crop_max,
            hflip: v.hflip,
            jitter_p,
            brightness: strength(j.brightness),
            contrast: strength(j.contrast),
            saturation: strength(j.saturation),
            hue: j.hue.map(|(_, h)| f64::from(h)).unwrap_or(0.0),
            grayscale: v.grayscale,
            blur_p: v.blur.map(|b| b.p).unwrap_or(0.0),
            solarize_p: v.solarize.map(|s| s.p).unwrap_or(0.0),
        }
    }

    /// The view pipeline at `size` with `normalize`.
    pub fn to_view(&self, size: usize, normalize: Option<Normalize>) -> ViewConfig {
        let mut v = ViewConfig::eval((size, size), normalize);
        if self.crop_min > 0.0 {
            v.crop = Some(RandomResizedCrop {
                scale: (self.crop_min, self.crop_max),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
            });
        }
        v.hflip = self.hflip;
        if self.jitter_p > 0.0 {
            v.jitter = Some((
                self.jitter_p,
                ColorJitter::new(
                    self.brightness as f32,
                    self.contrast as f32,
                    self.saturation as f32,
                    self.hue as f32,
                ),
            ));
        }
        v.grayscale = self.grayscale;
        if self.blur_p > 0.0 {
            v.blur = Some(selfsup_data::views::Blur {
                p: self.blur_p,
                kernel_size: (size / 10) | 1,
                sigma: (0.1, 2.0),
            });
        }
        if self.solarize_p > 0.0 {
            v.solarize = Some(selfsup_data::views::Solarization {
                p: self.solarize_p,
                threshold: 0.5,
            });
        }
        v
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let p = [
            ("hflip", self.hflip),
            ("jitter_p", self.jitter_p),
            ("grayscale", self.grayscale),
            ("blur_p", self.blur_p),
            ("solarize_p", self.solarize_p),
        ];
        for (k, v) in p {
            if !(0.0..=1.0).contains(&v) {
                return input(format!(
                    "augment.{k} = {v} is a probability: use a value in [0, 1]"
                ));
            }
        }
        if self.crop_min != 0.0
            && !(self.crop_min > 0.0 && self.crop_min <= self.crop_max && self.crop_max <= 1.0)
        {
            return input(format!(
                "augment.crop_min = {} / crop_max = {} must satisfy 0 < crop_min <= crop_max <= 1 (crop_min = 0 disables cropping)",
                self.crop_min, self.crop_max
            ));
        }
        Ok(())
    }
}

/// The per-epoch monitor: kNN and linear probe on detached features (labelled image data), or
/// validation loss (text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Run the monitor at the end of every epoch.
    pub enabled: bool,
    /// Labelled training images in the feature bank.
    pub bank: usize,
    /// Test images scored.
    pub queries: usize,
    /// kNN neighbours.
    pub knn_k: usize,
    /// kNN temperature.
    pub knn_temperature: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            bank: 10_000,
            queries: 2_000,
            knn_k: 20,
            knn_temperature: 0.07,
        }
    }
}

/// Everything a pretraining run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The SSL method.
    pub method: MethodName,
    /// The dataset.
    pub dataset: DatasetKind,
    /// Where the dataset is ("" = its default location).
    pub data: String,
    /// Seed of initialisation, data order, augmentation and the method's randomness.
    pub seed: u64,
    /// Worker threads (0 = every core).
    pub threads: usize,
    /// The method's hyperparameters and backbone (`[model]`, `[model.backbone]`).
    pub model: MethodConfig,
    /// Optimiser and schedule (`[optim]`).
    pub optim: OptimConfig,
    /// The training loop (`[train]`).
    pub train: TrainConfig,
    /// Training-view augmentation (`[augment]`).
    pub augment: AugmentConfig,
    /// The per-epoch monitor (`[monitor]`).
    pub monitor: MonitorConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig::defaults(MethodName::Simclr, DatasetKind::FashionMnist)
    }
}

impl RunConfig {
    /// The defaults of `method` on `dataset`.
    pub fn defaults(method: MethodName, dataset: DatasetKind) -> Self {
        let mut model = MethodConfig::for_method(method);
        let (channels, size) = dataset.image_shape();
        if dataset != DatasetKind::Text && model.backbone.kind != BackboneKind::Text {
            model.backbone.in_channels = channels;
            model.backbone.image_size = size;
        }
        let mut optim = OptimConfig::default();
        let mut train = TrainConfig::default();
        if method.is_text() {
            optim.optimizer = selfsup_ssl::OptimizerKind::Adamw;
            optim.lr = 1e-3;
            optim.weight_decay = 0.1;
            optim.warmup_steps = 100;
            optim.clip_grad = 1.0;
            train.batch_size = 32;
        }
        let view = selfsup_ssl::feed::default_view(method, size.max(1));
        RunConfig {
            method,
            dataset,
            data: String::new(),
            seed: 0,
            threads: 0,
            model,
            optim,
            train,
            augment: AugmentConfig::from_view(&view),
            monitor: MonitorConfig::default(),
        }
    }

    /// The defaults of the method and dataset `text` names (flags win over the file), with the
    /// file's values on top.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        method: Option<MethodName>,
        dataset: Option<DatasetKind>,
    ) -> Result<Self> {
        let user: toml::Value = toml::from_str(text).map_err(|e| {
            crate::error::CliError::Input(format!(
                "{}: not valid TOML{}: {}",
                origin.display(),
                e.span()
                    .map(|r| format!(
                        " at line {}",
                        text[..r.start.min(text.len())].lines().count().max(1)
                    ))
                    .unwrap_or_default(),
                e.message().lines().collect::<Vec<_>>().join("; ")
            ))
        })?;
        let get = |k: &str| user.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let method = match method {
            Some(m) => m,
            None => match get("method") {
                Some(s) => s.parse().map_err(|e: selfsup_ssl::SslError| {
                    crate::error::CliError::Input(format!("{}: {e}", origin.display()))
                })?,
                None => MethodName::Simclr,
            },
        };
        let dataset = match dataset {
            Some(d) => d,
            None => match get("dataset") {
                Some(s) => parse_dataset(&s).map_err(|e| {
                    crate::error::CliError::Input(format!("{}: {e}", origin.display()))
                })?,
                None if method.is_text() => DatasetKind::Text,
                None => DatasetKind::FashionMnist,
            },
        };
        let defaults = RunConfig::defaults(method, dataset);
        let mut base = toml::Value::try_from(&defaults)
            .map_err(|e| crate::error::CliError::Input(format!("internal: {e}")))?;
        merge(&mut base, &user, "", origin)?;
        // Flags decide method and dataset.
        if let Some(t) = base.as_table_mut() {
            t.insert("method".into(), toml::Value::String(method.as_str().into()));
            t.insert(
                "dataset".into(),
                toml::Value::String(dataset.as_str().into()),
            );
        }
        let mut cfg: RunConfig = base.try_into().map_err(|e: toml::de::Error| {
            crate::error::CliError::Input(format!(
                "{}: {}; fix the value or delete the key to use the default",
                origin.display(),
                e.message().trim()
            ))
        })?;
        cfg.model.method = method;
        Ok(cfg)
    }

    /// Reads a config file (see [`RunConfig::from_toml`]).
    pub fn load(
        path: &Path,
        method: Option<MethodName>,
        dataset: Option<DatasetKind>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::error::CliError::Input(format!(
                "config file {}: {e}; pass an existing TOML file to --config",
                path.display()
            ))
        })?;
        RunConfig::from_toml(&text, path, method, dataset)
    }

    /// The TOML text of this configuration.
    pub fn to_toml(&self) -> Result<String> {
        let mut v = toml::Value::try_from(self)
            .map_err(|e| crate::error::CliError::Input(format!("cannot write the config: {e}")))?;
        if let Some(m) = v.get_mut("model").and_then(|m| m.as_table_mut()) {
            m.remove("method");
        }
        toml::to_string_pretty(&v)
            .map_err(|e| crate::error::CliError::Input(format!("cannot write the config: {e}")))
    }

    /// Writes `config.toml` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("config.toml");
        let text = self.to_toml()?;
        selfsup_nn::checkpoint::atomic_write(&path, |f| {
            std::io::Write::write_all(f, text.as_bytes())
        })?;
        Ok(path)
    }

    /// Checks every section and their combinations.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.optim.validate()?;
        self.augment.validate()?;
        let text_data = self.dataset == DatasetKind::Text;
        if self.method.is_text() != text_data {
            return input(if text_data {
                format!(
                    "method {} trains on images; --dataset text needs mlm or gpt",
                    self.method
                )
            } else {
                format!(
                    "method {} trains on text: use --dataset text (the fortunes corpus by default)",
                    self.method
                )
            });
        }
        if let Err(e) = selfsup_tensor::Device::parse(&self.train.device) {
            return input(format!("train.device = {:?}: {e}", self.train.device));
        }
        if let Err(e) = self
            .train
            .precision
            .parse::<selfsup_tensor::precision::MatmulPrecision>()
        {
            return input(format!("train.precision: {e}"));
        }
        if self.train.batch_size < 2 {
            return input(format!(
                "train.batch_size = {} is too small: use at least 2",
                self.train.batch_size
            ));
        }
        if self.train.epochs == 0 && self.train.max_steps == 0 {
            return input(
                "train.epochs = 0 and no --max-steps: nothing to train; set --epochs 1 or more",
            );
        }
        let (c, s) = self.dataset.image_shape();
        if !text_data
            && self.model.backbone.in_channels != c
            && self.method != MethodName::Colorization
        {
            return input(format!(
                "model.backbone.in_channels = {} but {} images have {c} channels; remove the key or set it to {c}",
                self.model.backbone.in_channels,
                self.dataset.as_str()
            ));
        }
        if !text_data && self.dataset != DatasetKind::Images && self.model.backbone.image_size != s
        {
            return input(format!(
                "model.backbone.image_size = {} but {} images are {s}x{s}; remove the key or set it to {s}",
                self.model.backbone.image_size,
                self.dataset.as_str()
            ));
        }
        Ok(())
    }

    /// A short description of the backbone (for metrics.json).
    pub fn backbone_name(&self) -> String {
        let b: &BackboneConfig = &self.model.backbone;
        match b.kind {
            BackboneKind::SmallCnn => format!("small-cnn{:?}", b.widths),
            BackboneKind::Resnet18 => "resnet18".into(),
            BackboneKind::Vit => {
                format!("vit(patch {}, dim {}, depth {})", b.patch, b.dim, b.depth)
            }
            BackboneKind::Text => format!(
                "text(dim {}, depth {}, context {})",
                b.dim, b.depth, b.context
            ),
        }
    }
}

/// Parses a dataset name with a did-you-mean.
pub fn parse_dataset(s: &str) -> std::result::Result<DatasetKind, String> {
    const ALL: [DatasetKind; 5] = [
        DatasetKind::FashionMnist,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Images,
        DatasetKind::Text,
    ];
    ALL.iter()
        .copied()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|d| d.as_str()).collect();
            match did_you_mean(s, &names) {
                Some(m) => format!("unknown dataset `{s}`: did you mean `{m}`?"),
                None => format!("unknown dataset `{s}`: use one of {}", names.join(", ")),
            }
        })
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Overlays `user` on `base`, rejecting keys `base` lacks (with a did-you-mean) and values of
/// another type.
fn merge(base: &mut toml::Value, user: &toml::Value, path: &str, origin: &Path) -> Result<()> {
    let (Some(bt), Some(ut)) = (base.as_table_mut(), user.as_table()) else {
        return Ok(());
    };
    for (k, uv) in ut {
        let full = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let Some(bv) = bt.get_mut(k) else {
            let keys: Vec<&str> = bt.keys().map(String::as_str).collect();
            let hint = match did_you_mean(k, &keys) {
                Some(m) => {
                    let m = if path.is_empty() {
                        m.to_string()
                    } else {
                        format!("{path}.{m}")
                    };
                    format!("did you mean `{m}`?")
                }
                None => format!(
                    "known keys{}: {}",
                    if path.is_empty() {
                        String::new()
                    } else {
                        format!(" in [{path}]")
                    },
                    keys.join(", ")
                ),
            };
            return input(format!(
                "{}: unknown key `{full}`; {hint}",
                origin.display()
            ));
        };
        match (&mut *bv, uv) {
            (toml::Value::Table(_), toml::Value::Table(_)) => merge(bv, uv, &full, origin)?,
            (toml::Value::Float(_), toml::Value::Integer(i)) => *bv = toml::Value::Float(*i as f64),
            (b, u) if std::mem::discriminant(b) == std::mem::discriminant(u) => *b = u.clone(),
            (b, u) => {
                return input(format!(
                    "{}: `{full}` must be {}, not {}",
                    origin.display(),
                    type_name(b),
                    type_name(u)
                ))
            }
        }
    }
    Ok(())
}

/// Reads the `config.toml` of a run directory.
pub fn load_run_config(dir: &Path) -> Result<RunConfig> {
    let path = dir.join("config.toml");
    if !path.is_file() {
        return input(format!(
            "{} has no config.toml: pass a run directory written by `selfsup pretrain --out DIR`",
            dir.display()
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path, "reading"))?;
    RunConfig::from_toml(&text, &path, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_typos() {
        let c = RunConfig::defaults(MethodName::Byol, DatasetKind::FashionMnist);
        let text = c.to_toml().unwrap();
        let back = RunConfig::from_toml(&text, Path::new("x.toml"), None, None).unwrap();
        assert_eq!(back, c);
        let e = RunConfig::from_toml("[optim]\nlrr = 0.1\n", Path::new("x.toml"), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key `optim.lrr`") && e.contains("did you mean `optim.lr`"),
            "{e}"
        );
        let e = RunConfig::from_toml(
            "[train]\nepochs = \"many\"\n",
            Path::new("x.toml"),
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`train.epochs` must be an integer"), "{e}");
        let e = RunConfig::from_toml("method = \"simclrr\"\n", Path::new("x.toml"), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("simclr"), "{e}");
        let c = RunConfig::from_toml(
            "[optim]\nlr = 1\n[model]\ntemperature = 0.2\n",
            Path::new("x"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.optim.lr, 1.0);
        assert_eq!(c.model.temperature, 0.2);
        let t = RunConfig::from_toml("method = \"gpt\"\n", Path::new("x"), None, None).unwrap();
        assert_eq!(t.dataset, DatasetKind::Text);
    }

    #[test]
    fn augment_round_trips_through_views() {
        let v = ViewConfig::simclr_fashion_mnist_jitter();
        let a = AugmentConfig::from_view(&v);
        assert_eq!(a.to_view(28, v.normalize.clone()), v);
    }
}
