//! Replacing a loaded adapter's weights from another PEFT directory (PEFT's
//! `hotswap_adapter`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_core::{LoraAdapter, LoraLinear, LoraModelOps, LoraModule};

use crate::adapter_dir::{layer_error, read_adapter, read_adapter_dir, resolve_adapter_dir};
use crate::{AdapterConfig, PeftIoError};

/// Replaces the weights of the loaded adapter `adapter_name` in every layer that holds it with
/// those of the PEFT directory `dir` (or `dir/<adapter_name>`), as PEFT's `hotswap_adapter`
/// does: the name, the active set and the trainability stay; ranks and alphas come from the
/// new adapter (its scaling replaces the old one); a layer the new adapter does not target
/// gets zero weights, so that it contributes nothing.
///
/// PEFT keeps tensor shapes for `torch.compile` and pads a smaller rank with zeros
/// (`prepare_model_for_compiled_hotswap`); Burn compiles nothing, so each layer takes the new
/// adapter's own shapes, which gives the same outputs. Everything is read and checked before
/// the model is touched: on error it is unchanged.
///
/// ```no_run
/// # fn demo<B: burn::tensor::backend::Backend, M: lora_core::LoraModule<B>>(model: &mut M) -> Result<(), lora_peft_io::PeftIoError> {
/// use std::path::Path;
///
/// lora_peft_io::load_adapter(model, Path::new("adapters/style-a"), "default")?;
/// // ... serve ...
/// lora_peft_io::hotswap_adapter(model, Path::new("adapters/style-b"), "default")?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// The reading errors of [`load_adapter`](crate::load_adapter), and
/// [`PeftIoError::HotswapIncompatible`] when no layer holds `adapter_name`, when the new
/// adapter targets a module that does not hold it, when a layer's `use_rslora`, `use_dora` or
/// `lora_dropout` differs (PEFT's compatibility check), when the adapter is merged, carries a
/// base bias, or is a DoRA adapter on a layer the new one leaves out.
pub fn hotswap_adapter<B: Backend, M: LoraModule<B>>(
    model: &mut M,
    dir: &Path,
    adapter_name: &str,
) -> Result<AdapterConfig, PeftIoError> {
    let dir = resolve_adapter_dir(dir, adapter_name);
    let (config, weights_path, modules) = read_adapter_dir(&dir, adapter_name)?;
    let refuse = |reason: String| PeftIoError::HotswapIncompatible {
        dir: dir.clone(),
        adapter: adapter_name.to_string(),
        reason,
    };
    let mut holders = Vec::new();
    model.visit_lora("", &mut |path: &str, layer: &LoraLinear<B>| {
        if layer.adapter(adapter_name).is_some() {
            holders.push(path.to_string());
        }
    });
    if holders.is_empty() {
        return Err(refuse("no layer holds it: load it first".into()));
    }
    if let Some(module) = modules.keys().find(|m| !holders.contains(m)) {
        return Err(refuse(format!(
            "the new adapter targets `{module}`, which does not hold it"
        )));
    }
    let mut replacements: BTreeMap<String, LoraAdapter<B>> = BTreeMap::new();
    model.try_visit_lora(|path, layer| -> Result<(), PeftIoError> {
        let Some(old) = layer.adapter(adapter_name) else {
            return Ok(());
        };
        if layer.merged_adapters().iter().any(|m| m == adapter_name) {
            return Err(refuse(format!("it is merged into `{path}`: unmerge it first")));
        }
        let new = match modules.get(path) {
            Some(roles) => {
                let tensors =
                    read_adapter(path, layer, Some(roles), &config, adapter_name, &weights_path)?;
                if tensors.bias.is_some() || tensors.base_weight.is_some() {
                    return Err(refuse(format!(
                        "the new adapter carries a base weight or bias for `{path}`"
                    )));
                }
                let adapter = tensors.adapter;
                for (key, before, after) in [
                    ("use_rslora", old.config.use_rslora.to_string(), adapter.config.use_rslora.to_string()),
                    ("use_dora", old.config.use_dora.to_string(), adapter.config.use_dora.to_string()),
                    ("lora_dropout", old.config.lora_dropout.to_string(), adapter.config.lora_dropout.to_string()),
                ] {
                    if before != after {
                        return Err(refuse(format!(
                            "`{key}` of `{path}` is {before} in the loaded adapter and {after} in the new one"
                        )));
                    }
                }
                adapter
            }
            None if old.is_dora() => {
                return Err(refuse(format!(
                    "the new adapter leaves out `{path}`, whose loaded adapter is DoRA"
                )))
            }
            None => zeroed(old),
        };
        replacements.insert(path.to_string(), new);
        Ok(())
    })?;
    // Every layer checked: the replacements can no longer fail on the adapters themselves.
    model.try_visit_lora_mut(|path, layer| -> Result<(), PeftIoError> {
        match replacements.remove(path) {
            Some(adapter) => layer
                .replace_adapter(adapter)
                .map(drop)
                .map_err(|e| layer_error(path, e)),
            None => Ok(()),
        }
    })?;
    Ok(config)
}

/// `adapter` with zero weights: PEFT's treatment of a layer the new adapter leaves out.
fn zeroed<B: Backend>(adapter: &LoraAdapter<B>) -> LoraAdapter<B> {
    let mut zero = adapter.clone();
    let zeros = |t: &Param<Tensor<B, 2>>| {
        let value = t.val();
        Param::initialized(
            t.id,
            value.zeros_like().set_require_grad(value.is_require_grad()),
        )
    };
    zero.lora_a = zeros(&adapter.lora_a);
    zero.lora_b = zeros(&adapter.lora_b);
    zero
}
