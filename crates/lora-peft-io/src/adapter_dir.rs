//! Saving, loading and injecting adapters on any model made of `LoraLinear` layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use lora_core::{lora_layer_paths, LoraAdapter, LoraBias, LoraLinear, LoraModelOps, LoraModule};

use crate::matching::select_targets;
use crate::weights::{split_key, TensorRole};
use crate::{AdapterConfig, InitLoraWeights, PeftIoError, WeightDtype, PEFT_KEY_PREFIX};
use lora_hf::{commit, read_safetensors, serialize_safetensors, stage, HfFileError, HostTensor};

/// The config file of an adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The weights file of an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The weights file PEFT wrote before 0.7 (a PyTorch pickle).
pub const LEGACY_WEIGHTS_FILE: &str = "adapter_model.bin";

/// How [`save_adapter`] writes the weights.
///
/// ```
/// let options = lora_peft_io::SaveOptions { dtype: lora_peft_io::WeightDtype::BF16 };
/// assert_ne!(options, lora_peft_io::SaveOptions::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaveOptions {
    /// Element type of the tensors (PEFT writes F32).
    pub dtype: WeightDtype,
}

/// Where PEFT keeps adapter `name` of a model saved to `dir`: `dir` itself for `"default"`,
/// else the subfolder `dir/<name>`.
///
/// ```
/// use std::path::Path;
///
/// assert_eq!(lora_peft_io::adapter_dir(Path::new("out"), "default"), Path::new("out"));
/// assert_eq!(lora_peft_io::adapter_dir(Path::new("out"), "style"), Path::new("out/style"));
/// ```
pub fn adapter_dir(dir: &Path, adapter_name: &str) -> PathBuf {
    if adapter_name == lora_core::DEFAULT_ADAPTER_NAME {
        dir.to_path_buf()
    } else {
        dir.join(adapter_name)
    }
}

/// Adds a fresh adapter `adapter_name` to every LoRA layer of `model` that `config` targets,
/// with the layer's rank and alpha from `rank_pattern` / `alpha_pattern` (PEFT's
/// `get_peft_model`). A `null` `target_modules` targets the model's
/// [`default_target_modules`](LoraModule::default_target_modules). Returns the targeted paths.
/// On error, the model is unchanged.
///
/// # Errors
/// [`PeftIoError::Unsupported`] for a PEFT feature this crate does not apply,
/// [`PeftIoError::TargetNotFound`] for a target that matches no layer, and
/// [`PeftIoError::Layer`] when a layer refuses the adapter (an existing name, a bad config).
pub fn inject_adapter<B: Backend, M: LoraModule<B>>(
    model: &mut M,
    config: &AdapterConfig,
    adapter_name: &str,
) -> Result<Vec<String>, PeftIoError> {
    check_supported(config, Path::new(CONFIG_FILE))?;
    let defaults = model.default_target_modules();
    let targets = select_targets(config, &lora_layer_paths(model, ""), defaults)?;
    let mut adapters = BTreeMap::new();
    model.try_visit_lora(|path, layer| -> Result<(), PeftIoError> {
        if !targets.iter().any(|t| t == path) {
            return Ok(());
        }
        let lora = config.lora_config_for(path);
        let device = layer.base.weight.device();
        let adapter = LoraAdapter::new(
            adapter_name,
            layer.d_input(),
            layer.d_output(),
            &lora,
            &device,
        )
        .and_then(|a| check_insertable(layer, &a).map(|_| a))
        .map_err(|source| layer_error(path, source))?;
        adapters.insert(path.to_string(), adapter);
        Ok(())
    })?;
    insert_all(model, adapters, &BTreeMap::new())?;
    Ok(targets)
}

/// Writes adapter `adapter_name` of `model` as a PEFT adapter directory:
/// `adapter_config.json` (from `config`) and `adapter_model.safetensors`, into
/// [`adapter_dir`]`(dir, adapter_name)`. Both files are written to temporary files first and
/// renamed into place, so an error or a crash never leaves a half-written file and keeps any
/// previous adapter there intact. Returns the directory.
///
/// # Errors
/// [`PeftIoError::Layer`] when no layer has the adapter or one cannot export it, a value that
/// does not fit `options.dtype`, and [`HfFileError::Io`] naming the file that could not be
/// written (the directory keeps its previous files).
pub fn save_adapter<B: Backend, M: LoraModule<B>>(
    model: &M,
    dir: &Path,
    adapter_name: &str,
    config: &AdapterConfig,
    options: SaveOptions,
) -> Result<PathBuf, PeftIoError> {
    let mut tensors = BTreeMap::new();
    model.try_visit_lora(|path, layer| -> Result<(), PeftIoError> {
        match layer.adapter(adapter_name) {
            Some(adapter) => export_layer(path, layer, adapter, config.bias(), &mut tensors),
            None => Ok(()),
        }
    })?;
    if tensors.is_empty() {
        return Err(PeftIoError::Layer {
            module: "<model>".into(),
            source: lora_core::LoraError::UnknownAdapter {
                name: adapter_name.to_string(),
                available: Vec::new(),
            },
        });
    }
    let target = adapter_dir(dir, adapter_name);
    std::fs::create_dir_all(&target).map_err(|source| HfFileError::io(&target, source))?;
    let weights = stage(
        &target.join(WEIGHTS_FILE),
        &serialize_safetensors(&tensors, options.dtype)?,
    )?;
    let config_file = stage(
        &target.join(CONFIG_FILE),
        config.to_json_string().as_bytes(),
    )?;
    commit(vec![weights, config_file])?;
    Ok(target)
}

fn export_layer<B: Backend>(
    path: &str,
    layer: &LoraLinear<B>,
    adapter: &LoraAdapter<B>,
    bias: LoraBias,
    out: &mut BTreeMap<String, HostTensor>,
) -> Result<(), PeftIoError> {
    let key = |suffix: &str| format!("{PEFT_KEY_PREFIX}{path}.{suffix}");
    // Burn keeps `x·A·B`; PEFT keeps `B(A(x))` with A `[r, in]` and B `[out, r]`.
    out.insert(
        key("lora_A.weight"),
        host(adapter.lora_a.val().transpose(), path)?,
    );
    out.insert(
        key("lora_B.weight"),
        host(adapter.lora_b.val().transpose(), path)?,
    );
    if let Some(magnitude) = &adapter.magnitude {
        out.insert(key("lora_magnitude_vector"), host(magnitude.val(), path)?);
    }
    if bias.trains_bias() {
        if let Some(b) = &layer.base.bias {
            out.insert(key("base_layer.bias"), host(b.val(), path)?);
        }
    }
    Ok(())
}

fn host<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    path: &str,
) -> Result<HostTensor, PeftIoError> {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| {
            layer_error(
                path,
                lora_core::LoraError::TensorData {
                    reason: format!("{e:?}"),
                },
            )
        })?;
    Ok(HostTensor { values, shape })
}

/// Reads the PEFT adapter directory `dir` (or its subfolder `dir/<adapter_name>`, where PEFT
/// saves non-default adapters) into slot `adapter_name` of every targeted LoRA layer of
/// `model` (a `null` `target_modules` meaning the model's
/// [`default_target_modules`](LoraModule::default_target_modules)). Everything is checked
/// before the model is touched: on error it is unchanged. Returns the adapter's config.
///
/// # Errors
/// Every problem of the directory, naming file and key: unreadable or invalid
/// `adapter_config.json` or weights, unsupported PEFT features ([`PeftIoError::Unsupported`]),
/// tensors that are missing, unexpected or of the wrong shape, targets that match no layer
/// ([`PeftIoError::TargetNotFound`]), and a layer's refusal ([`PeftIoError::Layer`]).
pub fn load_adapter<B: Backend, M: LoraModule<B>>(
    model: &mut M,
    dir: &Path,
    adapter_name: &str,
) -> Result<AdapterConfig, PeftIoError> {
    let dir = resolve_adapter_dir(dir, adapter_name);
    let (config, weights_path, modules) = read_adapter_dir(&dir, adapter_name)?;
    let defaults = model.default_target_modules();
    let targets = select_targets(&config, &lora_layer_paths(model, ""), defaults)?;
    for (module, roles) in &modules {
        if !targets.contains(module) {
            let (key, _) = roles
                .values()
                .next()
                .expect("a module entry holds a tensor");
            return Err(PeftIoError::UnexpectedTensor {
                path: weights_path.clone(),
                key: key.clone(),
                reason: format!("module `{module}` is not a target of the config"),
            });
        }
    }
    let mut adapters = BTreeMap::new();
    let mut biases = BTreeMap::new();
    model.try_visit_lora(|path, layer| -> Result<(), PeftIoError> {
        if !targets.iter().any(|t| t == path) {
            return Ok(());
        }
        let roles = modules.get(path);
        let (adapter, bias) =
            build_adapter(path, layer, roles, &config, adapter_name, &weights_path)?;
        adapters.insert(path.to_string(), adapter);
        if let Some(bias) = bias {
            biases.insert(path.to_string(), bias);
        }
        Ok(())
    })?;
    insert_all(model, adapters, &biases)?;
    Ok(config)
}

/// `dir`, or its subfolder `dir/<adapter_name>` where PEFT saves non-default adapters.
pub(crate) fn resolve_adapter_dir(dir: &Path, adapter_name: &str) -> PathBuf {
    if dir.join(CONFIG_FILE).is_file() || !dir.join(adapter_name).join(CONFIG_FILE).is_file() {
        dir.to_path_buf()
    } else {
        dir.join(adapter_name)
    }
}

/// The tensors of one module of an adapter file, by role, with their keys.
pub(crate) type ModuleTensors = BTreeMap<TensorRole, (String, HostTensor)>;

/// Reads an adapter directory: its config (checked for unsupported features), the weights
/// file's path and its LoRA tensors grouped by module path.
pub(crate) fn read_adapter_dir(
    dir: &Path,
    adapter_name: &str,
) -> Result<(AdapterConfig, PathBuf, BTreeMap<String, ModuleTensors>), PeftIoError> {
    let config_path = dir.join(CONFIG_FILE);
    let config = AdapterConfig::read(&config_path)?;
    check_supported(&config, &config_path)?;
    let (weights_path, tensors) = read_weights(dir)?;
    let mut modules: BTreeMap<String, ModuleTensors> = BTreeMap::new();
    for (key, tensor) in tensors {
        let (module, role) = split_key(&key, adapter_name);
        let unsupported = |feature: &str| PeftIoError::Unsupported {
            path: weights_path.clone(),
            feature: format!("{feature} (tensor `{key}`)"),
        };
        match role {
            TensorRole::Embedding => return Err(unsupported("LoRA on embedding layers")),
            TensorRole::LoraBBias => return Err(unsupported("`lora_bias` (a bias on lora_B)")),
            TensorRole::Other
                if config
                    .modules_to_save()
                    .iter()
                    .any(|m| module.contains(m.as_str())) =>
            {
                return Err(unsupported("`modules_to_save` weights"))
            }
            TensorRole::Other => {
                return Err(PeftIoError::UnexpectedTensor {
                    path: weights_path.clone(),
                    key,
                    reason: "not a LoRA tensor".into(),
                })
            }
            _ => {}
        }
        modules
            .entry(module)
            .or_default()
            .insert(role, (key, tensor));
    }
    Ok((config, weights_path, modules))
}

fn read_weights(dir: &Path) -> Result<(PathBuf, BTreeMap<String, HostTensor>), PeftIoError> {
    // `exists`, not `is_file`: a weights file that cannot be read is reported as such.
    let safetensors = dir.join(WEIGHTS_FILE);
    if safetensors.exists() {
        return Ok((safetensors.clone(), read_safetensors(&safetensors)?));
    }
    let legacy = dir.join(LEGACY_WEIGHTS_FILE);
    if legacy.exists() {
        return Ok((legacy.clone(), crate::pickle::read_torch_file(&legacy)?));
    }
    Err(PeftIoError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

#[allow(clippy::type_complexity)]
fn build_adapter<B: Backend>(
    path: &str,
    layer: &LoraLinear<B>,
    roles: Option<&ModuleTensors>,
    config: &AdapterConfig,
    adapter_name: &str,
    file: &Path,
) -> Result<(LoraAdapter<B>, Option<Tensor<B, 1>>), PeftIoError> {
    let (adapter, bias) = read_adapter(path, layer, roles, config, adapter_name, file)?;
    check_insertable(layer, &adapter).map_err(|e| layer_error(path, e))?;
    Ok((adapter, bias))
}

/// The adapter of module `path` from its tensors, checked against `layer`'s shapes and
/// `config`, and the base bias the file holds for it (`bias: "all"` / `"lora_only"`).
#[allow(clippy::type_complexity)]
pub(crate) fn read_adapter<B: Backend>(
    path: &str,
    layer: &LoraLinear<B>,
    roles: Option<&ModuleTensors>,
    config: &AdapterConfig,
    adapter_name: &str,
    file: &Path,
) -> Result<(LoraAdapter<B>, Option<Tensor<B, 1>>), PeftIoError> {
    let lora = config.lora_config_for(path);
    let missing = |suffix: &str| PeftIoError::MissingTensor {
        path: file.to_path_buf(),
        module: path.to_string(),
        key: format!("{PEFT_KEY_PREFIX}{path}.{suffix}"),
    };
    let get = |role: TensorRole, suffix: &str| {
        roles
            .and_then(|r| r.get(&role))
            .ok_or_else(|| missing(suffix))
    };
    let check = |(key, t): &(String, HostTensor), expected: Vec<usize>| {
        if t.shape == expected {
            Ok(())
        } else {
            Err(PeftIoError::ShapeMismatch {
                path: file.to_path_buf(),
                key: key.clone(),
                expected,
                found: t.shape.clone(),
            })
        }
    };
    let (d_in, d_out, r) = (layer.d_input(), layer.d_output(), lora.r);
    let a = get(TensorRole::LoraA, "lora_A.weight")?;
    check(a, vec![r, d_in])?;
    let b = get(TensorRole::LoraB, "lora_B.weight")?;
    check(b, vec![d_out, r])?;
    let device = layer.base.weight.device();
    let magnitude = match (
        lora.use_dora,
        roles.and_then(|r| r.get(&TensorRole::Magnitude)),
    ) {
        (true, Some(m)) => {
            check(m, vec![d_out])?;
            Some(tensor1(&m.1, &device))
        }
        (true, None) => return Err(missing("lora_magnitude_vector")),
        (false, Some((key, _))) => {
            return Err(PeftIoError::UnexpectedTensor {
                path: file.to_path_buf(),
                key: key.clone(),
                reason: "a DoRA magnitude, but the config has `use_dora: false`".into(),
            })
        }
        (false, None) => None,
    };
    let bias = match roles.and_then(|r| r.get(&TensorRole::BaseBias)) {
        None => None,
        Some((key, _)) if layer.base.bias.is_none() => {
            return Err(PeftIoError::UnexpectedTensor {
                path: file.to_path_buf(),
                key: key.clone(),
                reason: format!("module `{path}` has no bias"),
            })
        }
        Some(entry) => {
            check(entry, vec![d_out])?;
            Some(tensor1(&entry.1, &device))
        }
    };
    let lora_a = transposed(&a.1, &device);
    let lora_b = transposed(&b.1, &device);
    let adapter = LoraAdapter::from_weights(adapter_name, &lora, lora_a, lora_b, magnitude)
        .map_err(|e| layer_error(path, e))?;
    Ok((adapter, bias))
}

fn tensor1<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(t.values.clone(), [t.values.len()]), device)
}

/// The `[rows, cols]` host matrix `t` as a `[cols, rows]` tensor, transposed on the host: the
/// tensor is contiguous, as the weights training produces are, so a resumed run multiplies with
/// the same kernels (a transposed view takes another path in some backends, and its sums round
/// differently).
fn transposed<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 2> {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut values = Vec::with_capacity(t.values.len());
    for col in 0..cols {
        values.extend((0..rows).map(|row| t.values[row * cols + col]));
    }
    Tensor::from_data(TensorData::new(values, [cols, rows]), device)
}

/// Checks what [`LoraLinear::insert_adapter`] would refuse, without changing the layer.
fn check_insertable<B: Backend>(
    layer: &LoraLinear<B>,
    adapter: &LoraAdapter<B>,
) -> Result<(), lora_core::LoraError> {
    let mut probe = LoraLinear::new(layer.base.clone());
    probe.adapters = layer.adapters.clone();
    probe.insert_adapter(adapter.clone())
}

fn insert_all<B: Backend, M: LoraModule<B>>(
    model: &mut M,
    mut adapters: BTreeMap<String, LoraAdapter<B>>,
    biases: &BTreeMap<String, Tensor<B, 1>>,
) -> Result<(), PeftIoError> {
    model.try_visit_lora_mut(|path, layer| -> Result<(), PeftIoError> {
        let Some(adapter) = adapters.remove(path) else {
            return Ok(());
        };
        if let (Some(bias), Some(param)) = (biases.get(path), layer.base.bias.take()) {
            let trainable = adapter.config.bias.trains_bias();
            layer.base.bias = Some(Param::initialized(
                param.id,
                bias.clone().set_require_grad(trainable),
            ));
        }
        layer
            .insert_adapter(adapter)
            .map_err(|e| layer_error(path, e))
    })
}

pub(crate) fn layer_error(path: &str, source: lora_core::LoraError) -> PeftIoError {
    PeftIoError::Layer {
        module: path.to_string(),
        source,
    }
}

/// Refuses adapters whose weights only make sense with a modified base model, or features the
/// layers do not have.
fn check_supported(config: &AdapterConfig, path: &Path) -> Result<(), PeftIoError> {
    if let InitLoraWeights::Method(method) = config.init_lora_weights() {
        let lower = method.to_ascii_lowercase();
        if ["pissa", "olora", "loftq", "corda"]
            .iter()
            .any(|m| lower.starts_with(m))
        {
            return Err(PeftIoError::Unsupported {
                path: path.to_path_buf(),
                feature: format!(
                    "init_lora_weights `{method}` changes the base model; convert the adapter to plain LoRA in PEFT (save_pretrained with path_initial_model_for_weight_conversion)"
                ),
            });
        }
    }
    if config.get("lora_bias").and_then(|v| v.as_bool()) == Some(true) {
        return Err(PeftIoError::Unsupported {
            path: path.to_path_buf(),
            feature: "`lora_bias: true` (a bias on lora_B)".into(),
        });
    }
    Ok(())
}
