//! Saving, loading and injecting adapters on any model made of `LoraLinear` layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use lora_core::{lora_layer_paths, LoraAdapter, LoraBias, LoraLinear, LoraModelOps, LoraModule};

use crate::matching::{select_targets, selector_matches};
use crate::weights::{split_key, TensorRole};
use crate::{
    AdapterConfig, InitLoraWeights, ModuleSelector, PeftIoError, WeightDtype, PEFT_KEY_PREFIX,
};
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
/// use lora_peft_io::{SaveEmbeddingLayers, SaveOptions, WeightDtype};
///
/// let options = SaveOptions { dtype: WeightDtype::BF16, ..SaveOptions::default() };
/// assert_ne!(options, SaveOptions::default());
/// assert_eq!(options.save_embedding_layers, SaveEmbeddingLayers::Auto);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaveOptions {
    /// Element type of the tensors (PEFT writes F32).
    pub dtype: WeightDtype,
    /// Whether the base weights of adapted embedding-like layers go into the file (PEFT's
    /// `save_embedding_layers`).
    pub save_embedding_layers: SaveEmbeddingLayers,
}

/// PEFT's `save_embedding_layers`: whether an adapter file carries the full base weight
/// (`<path>.base_layer.weight`) of the model's adapted input and output embedding layers
/// ([`LoraModule::embedding_layer_paths`]), so that the adapter brings the table it was
/// trained against.
///
/// ```
/// use lora_peft_io::{AdapterConfig, SaveEmbeddingLayers};
///
/// let paths = ["encoder.q".to_string(), "lm_head".to_string()];
/// let text = r#"{"peft_type": "LORA", "target_modules": ["q", "v", "lm_head"]}"#;
/// let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
/// assert!(SaveEmbeddingLayers::Auto.resolve(&config, &paths));
/// assert!(!SaveEmbeddingLayers::No.resolve(&config, &paths));
/// let regex = r#"{"peft_type": "LORA", "target_modules": ".*(q|head)$"}"#;
/// let config = AdapterConfig::from_json_str(regex, "adapter_config.json".as_ref()).unwrap();
/// assert!(SaveEmbeddingLayers::Auto.resolve(&config, &paths));
/// assert!(!SaveEmbeddingLayers::Auto.resolve(&config, &paths[..1]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveEmbeddingLayers {
    /// PEFT's `"auto"`: when `target_modules` names `embed_tokens` or `lm_head` (a list
    /// entry, or a regex matching a module path that ends in one of them).
    #[default]
    Auto,
    /// PEFT's `True`: always, for the adapted embedding-like layers.
    Yes,
    /// PEFT's `False`: never.
    No,
}

impl SaveEmbeddingLayers {
    /// Whether base weights are written for an adapter with `config` on a model with these
    /// module paths.
    pub fn resolve(self, config: &AdapterConfig, module_paths: &[String]) -> bool {
        match self {
            Self::Yes => true,
            Self::No => false,
            Self::Auto => match config.target_modules() {
                Some(ModuleSelector::Names(names)) => names
                    .iter()
                    .any(|n| lora_core::EMBEDDING_LAYER_NAMES.contains(&n.as_str())),
                Some(selector @ ModuleSelector::Regex(pattern)) if pattern != "all-linear" => {
                    module_paths.iter().any(|path| {
                        let name = path.rsplit('.').next().unwrap_or(path);
                        lora_core::EMBEDDING_LAYER_NAMES.contains(&name)
                            && selector_matches(selector, path)
                    })
                }
                _ => false,
            },
        }
    }
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
    let selection = apply_adapter(
        model,
        config,
        adapter_name,
        |_| Ok(()),
        |_, layer| Ok(layer.base_copy()),
        |path, layer| {
            let adapter = layer
                .new_adapter(adapter_name, &config.lora_config_for(path))
                .map_err(|source| layer_error(path, source))?;
            Ok(LayerTensors {
                adapter,
                bias: None,
                base_weight: None,
            })
        },
    )?;
    Ok(selection
        .targets
        .into_iter()
        .chain(selection.saved)
        .collect())
}

/// Selects (and wraps) the layers `config` applies to, builds each one's module copy
/// (`copy_of`) or adapter (`adapter_of`) after `check` accepted the selection, checks that every
/// layer takes it, and only then changes the model; on a failure it undoes the wrapping and
/// leaves the model as it was.
fn apply_adapter<B: Backend, M: LoraModule<B>>(
    model: &mut M,
    config: &AdapterConfig,
    adapter_name: &str,
    check: impl FnOnce(&Selection) -> Result<(), PeftIoError>,
    mut copy_of: impl FnMut(&str, &LoraLinear<B>) -> Result<burn::nn::Linear<B>, PeftIoError>,
    mut adapter_of: impl FnMut(&str, &LoraLinear<B>) -> Result<LayerTensors<B>, PeftIoError>,
) -> Result<Selection, PeftIoError> {
    let selection = select_and_wrap(model, config)?;
    let mut adapters = BTreeMap::new();
    let mut copies = BTreeMap::new();
    let read = check(&selection).and_then(|()| {
        model.try_visit_lora(|path, layer| -> Result<(), PeftIoError> {
            if selection.saved.iter().any(|s| s == path) {
                let copy = copy_of(path, layer)?;
                layer
                    .check_module_copy(adapter_name, &copy)
                    .map_err(|e| layer_error(path, e))?;
                copies.insert(path.to_string(), copy);
            } else if selection.targets.iter().any(|t| t == path) {
                let tensors = adapter_of(path, layer)?;
                layer
                    .check_insertable(&tensors.adapter)
                    .map_err(|e| layer_error(path, e))?;
                adapters.insert(path.to_string(), tensors);
            }
            Ok(())
        })
    });
    if let Err(e) = read {
        unwrap_all(model, &selection.wrapped);
        return Err(e);
    }
    insert_all(model, adapters, copies, adapter_name)?;
    Ok(selection)
}

/// Where an adapter applies: its LoRA targets, the layers it saves whole (`modules_to_save`),
/// and the layers wrapped on demand for either.
struct Selection {
    targets: Vec<String>,
    saved: Vec<String>,
    wrapped: Vec<String>,
}

/// The layer among `modules_to_save` that `module` (a file key without the prefix and the
/// parameter name) belongs to, and the tensor's role: `lm_head.weight` is the weight of
/// `lm_head` when `lm_head` is saved whole. PEFT matches the entries as path suffixes.
fn saved_module_tensor(modules_to_save: &[String], key: &str) -> Option<(String, TensorRole)> {
    let (module, role) = if let Some(module) = key.strip_suffix(".weight") {
        (module, TensorRole::ModuleWeight)
    } else {
        (key.strip_suffix(".bias")?, TensorRole::ModuleBias)
    };
    saves_whole(modules_to_save, module).then(|| (module.to_string(), role))
}

/// Whether `modules_to_save` names the module at `path`: PEFT takes its entries as path
/// suffixes.
fn saves_whole(modules_to_save: &[String], path: &str) -> bool {
    modules_to_save.iter().any(|m| path.ends_with(m.as_str()))
}

/// The targets of `config` among the model's LoRA layers and the layers it wraps on demand
/// ([`LoraModule::wrappable_lora_paths`]; not for `all-linear`, which PEFT applies to linear
/// layers only), wrapping the targeted ones. Returns the targets and the paths wrapped.
fn select_and_wrap<B: Backend, M: LoraModule<B>>(
    model: &mut M,
    config: &AdapterConfig,
) -> Result<Selection, PeftIoError> {
    let layers = lora_layer_paths(model, "");
    let wrappable = model.wrappable_lora_paths();
    let mut paths = layers.clone();
    paths.extend(wrappable.iter().filter(|p| !layers.contains(p)).cloned());
    // `all-linear` targets the linear layers as they are, as PEFT applies it to `nn.Linear`
    // modules only; `modules_to_save` may still name a wrappable layer.
    let all_linear =
        matches!(config.target_modules(), Some(ModuleSelector::Regex(p)) if p == "all-linear");
    let candidates = if all_linear { &layers } else { &paths };
    let targets = select_targets(config, candidates, model.default_target_modules())?;
    let mut saved = Vec::new();
    for entry in config.modules_to_save() {
        let matched: Vec<&String> = paths
            .iter()
            .filter(|p| saves_whole(std::slice::from_ref(entry), p))
            .collect();
        if matched.is_empty() {
            return Err(PeftIoError::Unsupported {
                path: PathBuf::from(CONFIG_FILE),
                feature: format!(
                    "`modules_to_save` entry `{entry}`, which names no linear layer or embedding lookup (only those can be saved whole here)"
                ),
            });
        }
        saved.extend(
            matched
                .into_iter()
                .filter(|p| !saved.contains(*p))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    let wrapped: Vec<String> = targets
        .iter()
        .chain(&saved)
        .filter(|t| wrappable.contains(t))
        .filter(|t| model.wrap_lora_layer(t))
        .cloned()
        .collect();
    Ok(Selection {
        targets,
        saved,
        wrapped,
    })
}

/// Undoes the wrapping of [`select_and_wrap`] after a failure.
fn unwrap_all<B: Backend, M: LoraModule<B>>(model: &mut M, wrapped: &[String]) {
    for path in wrapped {
        model.unwrap_lora_layer(path);
    }
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
    let mut module_paths = lora_layer_paths(model, "");
    module_paths.extend(model.wrappable_lora_paths());
    let embedding_layers = if options.save_embedding_layers.resolve(config, &module_paths) {
        model.embedding_layer_paths()
    } else {
        Vec::new()
    };
    model.try_visit_lora(|path, layer| -> Result<(), PeftIoError> {
        if let Some(copy) = layer.module_copy(adapter_name) {
            // PEFT writes a module saved whole under its own keys, without the adapter name.
            let weight = to_peft_layout(layer, copy.layer.weight.val());
            tensors.insert(
                format!("{PEFT_KEY_PREFIX}{path}.weight"),
                host(weight, path)?,
            );
            if let Some(bias) = &copy.layer.bias {
                tensors.insert(
                    format!("{PEFT_KEY_PREFIX}{path}.bias"),
                    host(bias.val(), path)?,
                );
            }
            return Ok(());
        }
        let Some(adapter) = layer.adapter(adapter_name) else {
            return Ok(());
        };
        export_layer(path, layer, adapter, config.bias(), &mut tensors)?;
        if embedding_layers.iter().any(|p| p == path) {
            if !layer.merged_adapters().is_empty() {
                return Err(layer_error(
                    path,
                    lora_core::LoraError::MergedLayer {
                        operation: "saving the base weight with the adapter",
                        merged: layer.merged_adapters().to_vec(),
                    },
                ));
            }
            let weight = to_peft_layout(layer, layer.base.weight.val().dequantize());
            tensors.insert(
                format!("{PEFT_KEY_PREFIX}{path}.base_layer.weight"),
                host(weight, path)?,
            );
        }
        Ok(())
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
    // Burn keeps `x·A·B`; PEFT keeps `B(A(x))` with A `[r, in]` and B `[out, r]`, under
    // `lora_embedding_A` / `_B` for an embedding table.
    let [a_key, b_key] = if layer.is_embedding() {
        ["lora_embedding_A", "lora_embedding_B"]
    } else {
        ["lora_A.weight", "lora_B.weight"]
    };
    out.insert(key(a_key), host(adapter.lora_a.val().transpose(), path)?);
    out.insert(key(b_key), host(adapter.lora_b.val().transpose(), path)?);
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
    apply_adapter(
        model,
        &config,
        adapter_name,
        |selection| {
            let expected: Vec<String> = selection
                .targets
                .iter()
                .chain(&selection.saved)
                .cloned()
                .collect();
            check_modules_targeted(&modules, &expected, &weights_path)
        },
        |path, layer| read_module_copy(path, layer, modules.get(path), &weights_path),
        |path, layer| {
            let roles = modules.get(path);
            read_adapter(path, layer, roles, &config, adapter_name, &weights_path)
        },
    )?;
    Ok(config)
}

/// The full copy of the layer at `path` that a file saving it whole holds: `<path>.weight`
/// (`[out, in]`, an embedding's `[num, dim]`) and `<path>.bias` exactly when the layer has one.
fn read_module_copy<B: Backend>(
    path: &str,
    layer: &LoraLinear<B>,
    roles: Option<&ModuleTensors>,
    file: &Path,
) -> Result<burn::nn::Linear<B>, PeftIoError> {
    let device = layer.base.weight.device();
    let get = |role: TensorRole| roles.and_then(|r| r.get(&role));
    let (key, weight) =
        get(TensorRole::ModuleWeight).ok_or_else(|| PeftIoError::MissingTensor {
            path: file.to_path_buf(),
            module: path.to_string(),
            key: format!("{PEFT_KEY_PREFIX}{path}.weight"),
        })?;
    let d_out = layer.d_output();
    let expected = peft_weight_shape(layer);
    let mismatch = |key: &str, expected: Vec<usize>, found: &[usize]| PeftIoError::ShapeMismatch {
        path: file.to_path_buf(),
        key: key.to_string(),
        expected,
        found: found.to_vec(),
    };
    if weight.shape != expected {
        return Err(mismatch(key, expected, &weight.shape));
    }
    let weight = from_peft_layout(layer, weight, &device);
    let bias = match (get(TensorRole::ModuleBias), &layer.base.bias) {
        (None, None) => None,
        (Some((key, bias)), Some(_)) if bias.shape == [d_out] => Some(tensor1(bias, &device)),
        (Some((key, bias)), Some(_)) => return Err(mismatch(key, vec![d_out], &bias.shape)),
        (Some((key, _)), None) => {
            return Err(PeftIoError::UnexpectedTensor {
                path: file.to_path_buf(),
                key: key.clone(),
                reason: format!("module `{path}` has no bias"),
            })
        }
        (None, Some(_)) => {
            return Err(PeftIoError::MissingTensor {
                path: file.to_path_buf(),
                module: path.to_string(),
                key: format!("{PEFT_KEY_PREFIX}{path}.bias"),
            })
        }
    };
    Ok(burn::nn::Linear {
        weight: Param::from_tensor(weight),
        bias: bias.map(Param::from_tensor),
    })
}

/// Refuses a file holding tensors for a module the config does not target.
fn check_modules_targeted(
    modules: &BTreeMap<String, ModuleTensors>,
    targets: &[String],
    weights_path: &Path,
) -> Result<(), PeftIoError> {
    for (module, roles) in modules {
        if !targets.contains(module) {
            let (key, _) = roles
                .values()
                .next()
                .expect("a module entry holds a tensor");
            return Err(PeftIoError::UnexpectedTensor {
                path: weights_path.to_path_buf(),
                key: key.clone(),
                reason: format!("module `{module}` is not a target of the config"),
            });
        }
    }
    Ok(())
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
            TensorRole::LoraBBias => return Err(unsupported("`lora_bias` (a bias on lora_B)")),
            TensorRole::Other => {
                if let Some((saved, role)) = saved_module_tensor(config.modules_to_save(), &module)
                {
                    modules
                        .entry(saved)
                        .or_default()
                        .insert(role, (key, tensor));
                    continue;
                }
                return Err(PeftIoError::UnexpectedTensor {
                    path: weights_path.clone(),
                    key,
                    reason: "not a LoRA tensor".into(),
                });
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

/// What an adapter file holds for one layer, in Burn's layout.
pub(crate) struct LayerTensors<B: Backend> {
    /// The adapter.
    pub(crate) adapter: LoraAdapter<B>,
    /// The base bias (`bias: "all"` / `"lora_only"`).
    pub(crate) bias: Option<Tensor<B, 1>>,
    /// The base weight (`base_layer.weight`, PEFT's `save_embedding_layers`).
    pub(crate) base_weight: Option<Tensor<B, 2>>,
}

/// The adapter of module `path` from its tensors, checked against `layer`'s shapes and
/// `config`, with the base bias and weight the file holds for it.
pub(crate) fn read_adapter<B: Backend>(
    path: &str,
    layer: &LoraLinear<B>,
    roles: Option<&ModuleTensors>,
    config: &AdapterConfig,
    adapter_name: &str,
    file: &Path,
) -> Result<LayerTensors<B>, PeftIoError> {
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
    let ([a_role, b_role], [a_key, b_key], [other_a, other_b]) = if layer.is_embedding() {
        (
            [TensorRole::EmbeddingA, TensorRole::EmbeddingB],
            ["lora_embedding_A", "lora_embedding_B"],
            [TensorRole::LoraA, TensorRole::LoraB],
        )
    } else {
        (
            [TensorRole::LoraA, TensorRole::LoraB],
            ["lora_A.weight", "lora_B.weight"],
            [TensorRole::EmbeddingA, TensorRole::EmbeddingB],
        )
    };
    if let Some((key, _)) = [other_a, other_b]
        .iter()
        .find_map(|role| roles.and_then(|r| r.get(role)))
    {
        return Err(PeftIoError::UnexpectedTensor {
            path: file.to_path_buf(),
            key: key.clone(),
            reason: format!(
                "module `{path}` is {}, whose factors are `{a_key}` and `{b_key}`",
                if layer.is_embedding() {
                    "an embedding table"
                } else {
                    "a linear layer"
                }
            ),
        });
    }
    let a = get(a_role, a_key)?;
    check(a, vec![r, d_in])?;
    let b = get(b_role, b_key)?;
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
    let base_weight = match roles.and_then(|r| r.get(&TensorRole::BaseWeight)) {
        None => None,
        Some(entry) => {
            check(entry, peft_weight_shape(layer))?;
            Some(from_peft_layout(layer, &entry.1, &device))
        }
    };
    let lora_a = transposed(&a.1, &device);
    let lora_b = transposed(&b.1, &device);
    let adapter = LoraAdapter::from_weights(adapter_name, &lora, lora_a, lora_b, magnitude)
        .map_err(|e| layer_error(path, e))?;
    Ok(LayerTensors {
        adapter,
        bias,
        base_weight,
    })
}

/// The shape PEFT stores a layer's full weight in: `[out, in]` for a linear layer, the table
/// `[num, dim]` for an embedding (Burn's layout is `[in, out]` for both).
fn peft_weight_shape<B: Backend>(layer: &LoraLinear<B>) -> Vec<usize> {
    let (d_in, d_out) = (layer.d_input(), layer.d_output());
    if layer.is_embedding() {
        vec![d_in, d_out]
    } else {
        vec![d_out, d_in]
    }
}

/// A full weight of `layer` in Burn's layout, put in PEFT's ([`peft_weight_shape`]).
fn to_peft_layout<B: Backend>(layer: &LoraLinear<B>, weight: Tensor<B, 2>) -> Tensor<B, 2> {
    if layer.is_embedding() {
        weight
    } else {
        weight.transpose()
    }
}

/// A full weight of `layer` in PEFT's layout, put in Burn's.
fn from_peft_layout<B: Backend>(
    layer: &LoraLinear<B>,
    t: &HostTensor,
    device: &B::Device,
) -> Tensor<B, 2> {
    if layer.is_embedding() {
        matrix(t, device)
    } else {
        transposed(t, device)
    }
}

fn matrix<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(t.values.clone(), [t.shape[0], t.shape[1]]),
        device,
    )
}

fn tensor1<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(t.values.clone(), [t.values.len()]), device)
}

/// The `[rows, cols]` host matrix `t` as a `[cols, rows]` tensor, transposed on the host: the
/// tensor is contiguous, as the weights training produces are, so a resumed run multiplies with
/// the same kernels (a transposed view takes another path in some backends, and its sums round
/// differently).
fn transposed<B: Backend>(t: &HostTensor, device: &B::Device) -> Tensor<B, 2> {
    match t.transposed() {
        Some(t) => matrix(&t, device),
        None => unreachable!("every matrix is shape-checked before it is placed"),
    }
}

/// Inserts every layer's adapter, replacing the base bias and weight where the file holds them
/// (as PEFT's loading does).
fn insert_all<B: Backend, M: LoraModule<B>>(
    model: &mut M,
    mut adapters: BTreeMap<String, LayerTensors<B>>,
    mut copies: BTreeMap<String, burn::nn::Linear<B>>,
    adapter_name: &str,
) -> Result<(), PeftIoError> {
    model.try_visit_lora_mut(|path, layer| -> Result<(), PeftIoError> {
        if let Some(copy) = copies.remove(path) {
            return layer
                .insert_module_copy(adapter_name, copy)
                .map_err(|e| layer_error(path, e));
        }
        let Some(LayerTensors {
            adapter,
            bias,
            base_weight,
        }) = adapters.remove(path)
        else {
            return Ok(());
        };
        if let (Some(bias), Some(param)) = (bias, layer.base.bias.take()) {
            let trainable = adapter.config.bias.trains_bias();
            layer.base.bias = Some(Param::initialized(
                param.id,
                bias.set_require_grad(trainable),
            ));
        }
        if let Some(weight) = base_weight {
            let id = layer.base.weight.id;
            layer.base.weight = Param::initialized(id, weight.set_require_grad(false));
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
    if config
        .get("trainable_token_indices")
        .is_some_and(|v| !v.is_null())
    {
        return Err(PeftIoError::Unsupported {
            path: path.to_path_buf(),
            feature: "`trainable_token_indices` (trainable rows of the embedding)".into(),
        });
    }
    if config.get("ensure_weight_tying").and_then(|v| v.as_bool()) == Some(true) {
        return Err(PeftIoError::Unsupported {
            path: path.to_path_buf(),
            feature: "`ensure_weight_tying: true` (one adapter shared by tied layers)".into(),
        });
    }
    if config.get("lora_bias").and_then(|v| v.as_bool()) == Some(true) {
        return Err(PeftIoError::Unsupported {
            path: path.to_path_buf(),
            feature: "`lora_bias: true` (a bias on lora_B)".into(),
        });
    }
    Ok(())
}
