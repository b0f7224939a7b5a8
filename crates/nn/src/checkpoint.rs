//! Checkpoints in the safetensors format.
//!
//! One file holds the model's parameters and buffers under their dotted names (a plain
//! PyTorch-style state dict), the optimiser's state under `__optim__.{param}.{slot}`, and in the
//! header metadata the step, epoch, optimiser step count and random generator states.
//!
//! Writes are atomic: the bytes go to a temporary file in the same directory, which is
//! fsynced and then renamed over the destination, so a crash mid-write leaves the previous
//! checkpoint intact. Loading is strict by default and reports every missing, unexpected or
//! wrong-shaped tensor by name; [`LoadOptions::prefix`] loads a sub-module (export an encoder
//! from a full model).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use selfsup_tensor::{no_grad, DType, Tensor};

use crate::error::{NnError, Result};
use crate::module::Module;
use crate::optim::Optimizer;

/// Prefix of optimiser state tensors in a checkpoint.
pub const OPTIM_PREFIX: &str = "__optim__.";
const FORMAT: &str = "selfsup-checkpoint-1";

/// Training progress saved beside the tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrainState {
    /// Global step.
    pub step: u64,
    /// Epoch.
    pub epoch: u64,
    /// Named generator states `(seed, offset)` from [`selfsup_tensor::Generator::state`]
    /// (e.g. the data-loading generator).
    pub generators: BTreeMap<String, (u64, u64)>,
}

/// How to load a checkpoint into a model.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Only tensors whose names start with this prefix, with the prefix removed (e.g.
    /// `"encoder."` to load a full model's encoder into an encoder).
    pub prefix: Option<String>,
    /// Accept tensors in the file that the model does not have (missing or wrong-shaped
    /// tensors are always errors).
    pub allow_unexpected: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NnError + '_ {
    move |source| NnError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn format_err(path: &Path, msg: impl std::fmt::Display) -> NnError {
    NnError::Format {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Writes a file atomically: `write` fills a temporary file beside `path`, which is flushed,
/// fsynced and renamed over `path`. If `write` fails (or the process dies), `path` keeps its
/// previous content and the temporary file is removed (when still possible).
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format_err(path, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename durable; not all platforms can open a directory, so best effort.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        DType::I64 => Dtype::I64,
        DType::U32 => Dtype::U32,
    }
}

/// The little-endian bytes of a tensor's elements.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(match t.dtype() {
        DType::F32 => bytemuck::cast_slice(&t.to_vec::<f32>()?).to_vec(),
        DType::F64 => bytemuck::cast_slice(&t.to_vec::<f64>()?).to_vec(),
        DType::BF16 => bytemuck::cast_slice(&t.to_vec::<half::bf16>()?).to_vec(),
        DType::F16 => bytemuck::cast_slice(&t.to_vec::<half::f16>()?).to_vec(),
        DType::I64 => bytemuck::cast_slice(&t.to_vec::<i64>()?).to_vec(),
        DType::U32 => bytemuck::cast_slice(&t.to_vec::<u32>()?).to_vec(),
    })
}

/// Copies little-endian bytes into a vector of `T` (the bytes need not be aligned).
fn pod_vec<T: bytemuck::Pod>(data: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); data.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(data);
    v
}

fn view_to_tensor(path: &Path, name: &str, v: &TensorView<'_>) -> Result<Tensor> {
    let (shape, data) = (v.shape().to_vec(), v.data());
    Ok(match v.dtype() {
        Dtype::F32 => Tensor::from_vec(pod_vec::<f32>(data), &shape)?,
        Dtype::F64 => Tensor::from_vec(pod_vec::<f64>(data), &shape)?,
        Dtype::BF16 => Tensor::from_vec(pod_vec::<half::bf16>(data), &shape)?,
        Dtype::F16 => Tensor::from_vec(pod_vec::<half::f16>(data), &shape)?,
        Dtype::I64 => Tensor::from_vec(pod_vec::<i64>(data), &shape)?,
        Dtype::U32 => Tensor::from_vec(pod_vec::<u32>(data), &shape)?,
        d => {
            return Err(format_err(
                path,
                format!("tensor {name}: dtype {d:?} is not supported"),
            ))
        }
    })
}

/// The model's parameters and buffers by name (the tensors a checkpoint holds for it).
pub fn state_dict(model: &dyn Module) -> Vec<(String, Tensor)> {
    let mut v = model.params();
    v.extend(model.buffers());
    v
}

/// Saves the model (parameters and buffers), optionally an optimiser, and the training state,
/// atomically.
pub fn save_checkpoint(
    path: impl AsRef<Path>,
    model: &dyn Module,
    optimizer: Option<&dyn Optimizer>,
    state: &TrainState,
) -> Result<()> {
    let path = path.as_ref();
    let mut tensors: Vec<(String, Tensor)> = state_dict(model);
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("step".into(), state.step.to_string());
    meta.insert("epoch".into(), state.epoch.to_string());
    for (name, (seed, offset)) in &state.generators {
        meta.insert(format!("rng.{name}"), format!("{seed},{offset}"));
    }
    model.visit_rng("", &mut |name, (seed, offset)| {
        meta.insert(format!("module_rng.{name}"), format!("{seed},{offset}"));
    });
    if let Some(opt) = optimizer {
        meta.insert("optim_step".into(), opt.step_count().to_string());
        for (k, t) in opt.state() {
            tensors.push((format!("{OPTIM_PREFIX}{k}"), t.clone()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (n, _) in &tensors {
        if !seen.insert(n.as_str()) {
            return Err(format_err(path, format!("two tensors are named {n}")));
        }
    }
    let bytes: Vec<(String, Vec<u8>, &Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), tensor_bytes(t)?, t)))
        .collect::<Result<_>>()?;
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, t)| {
            TensorView::new(st_dtype(t.dtype()), t.shape().to_vec(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format_err(path, format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    let data =
        safetensors::tensor::serialize(views, &Some(meta)).map_err(|e| format_err(path, e))?;
    atomic_write(path, |f| f.write_all(&data))
}

/// Saves only the model's parameters and buffers (e.g. an exported encoder).
pub fn save_model(path: impl AsRef<Path>, model: &dyn Module) -> Result<()> {
    save_checkpoint(path, model, None, &TrainState::default())
}

fn parse_pair(path: &Path, key: &str, v: &str) -> Result<(u64, u64)> {
    let bad = || format_err(path, format!("metadata {key} = {v:?} is not `seed,offset`"));
    let (a, b) = v.split_once(',').ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

fn parse_u64(path: &Path, meta: &HashMap<String, String>, key: &str) -> Result<u64> {
    match meta.get(key) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| format_err(path, format!("metadata {key} = {v:?} is not an integer"))),
    }
}

/// Loads a checkpoint into `model` (and `optimizer`, when given: its state and step count) and
/// returns the training state. Nothing is written into the model unless every tensor it needs
/// is present with the right shape; otherwise the error lists every problem by name.
pub fn load_checkpoint(
    path: impl AsRef<Path>,
    model: &dyn Module,
    optimizer: Option<&mut dyn Optimizer>,
    opts: &LoadOptions,
) -> Result<TrainState> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(io_err(path))?;
    let st = SafeTensors::deserialize(&data).map_err(|e| format_err(path, e))?;
    let (_, header) = SafeTensors::read_metadata(&data).map_err(|e| format_err(path, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").is_some_and(|f| f != FORMAT) {
        return Err(format_err(
            path,
            format!("unknown format {:?}", meta.get("format")),
        ));
    }

    // Model tensors in the file, after the prefix filter.
    let prefix = opts.prefix.as_deref().unwrap_or("");
    let mut file: BTreeMap<String, TensorView<'_>> = BTreeMap::new();
    let mut optim: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some(k) = name.strip_prefix(OPTIM_PREFIX) {
            optim.push((k.to_string(), view));
        } else if let Some(k) = name.strip_prefix(prefix) {
            file.insert(k.to_string(), view);
        }
    }
    let targets = state_dict(model);
    let mut problems = Vec::new();
    let mut pairs = Vec::new();
    for (name, t) in &targets {
        match file.remove(name) {
            None => problems.push(format!("missing: {prefix}{name} (shape {:?})", t.shape())),
            Some(v) if v.shape() != t.shape() => problems.push(format!(
                "wrong shape: {prefix}{name} is {:?} in the file, the model has {:?}",
                v.shape(),
                t.shape()
            )),
            Some(v) => pairs.push((name.clone(), t.clone(), v)),
        }
    }
    if !opts.allow_unexpected {
        problems.extend(file.keys().map(|k| format!("unexpected: {prefix}{k}")));
    }
    if !problems.is_empty() {
        return Err(NnError::Mismatch {
            path: path.to_path_buf(),
            problems,
        });
    }
    // Convert everything before writing anything, so a failure leaves the model untouched.
    let loaded: Vec<(Tensor, Tensor)> = pairs
        .iter()
        .map(|(name, t, v)| {
            let src = view_to_tensor(path, name, v)?;
            let src = if src.dtype() == t.dtype() {
                src
            } else {
                src.to_dtype(t.dtype())?
            };
            Ok((t.clone(), src))
        })
        .collect::<Result<_>>()?;
    let optim_state: Vec<(String, Tensor)> = optim
        .iter()
        .map(|(k, v)| Ok((k.clone(), view_to_tensor(path, k, v)?)))
        .collect::<Result<_>>()?;
    // The optimiser first: its load validates names and changes nothing on failure.
    if let Some(opt) = optimizer {
        let step = parse_u64(path, &meta, "optim_step")?;
        opt.load_state(optim_state).map_err(|e| match e {
            NnError::Config(msg) => NnError::Mismatch {
                path: path.to_path_buf(),
                problems: vec![msg],
            },
            e => e,
        })?;
        opt.set_step_count(step);
    }
    {
        let _g = no_grad();
        for (t, src) in &loaded {
            // Checkpoints are read into host memory; a model on a GPU gets them copied there.
            t.assign(&src.to_device(t.device())?)?;
        }
    }
    let mut state = TrainState {
        step: parse_u64(path, &meta, "step")?,
        epoch: parse_u64(path, &meta, "epoch")?,
        generators: BTreeMap::new(),
    };
    let mut module_rng = HashMap::new();
    for (k, v) in &meta {
        if let Some(name) = k.strip_prefix("rng.") {
            state
                .generators
                .insert(name.to_string(), parse_pair(path, k, v)?);
        } else if let Some(name) = k.strip_prefix("module_rng.") {
            if let Some(rest) = name.strip_prefix(prefix) {
                module_rng.insert(rest.to_string(), parse_pair(path, k, v)?);
            }
        }
    }
    model.load_rng("", &module_rng);
    Ok(state)
}

/// Loads only model tensors (strict), optionally those under a prefix.
pub fn load_model(path: impl AsRef<Path>, model: &dyn Module, prefix: Option<&str>) -> Result<()> {
    let opts = LoadOptions {
        prefix: prefix.map(str::to_string),
        allow_unexpected: false,
    };
    load_checkpoint(path, model, None, &opts).map(|_| ())
}
