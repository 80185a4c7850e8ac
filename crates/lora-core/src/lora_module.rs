//! Reaching the LoRA layers of a model by their module paths.

use burn::tensor::backend::Backend;

use crate::LoraLinear;

/// A model (or part of one) whose [`LoraLinear`] layers can be visited with their module paths,
/// e.g. `encoder.block.0.layer.0.SelfAttention.q`: what adapter files, target matching and
/// model-wide adapter operations work on.
///
/// Implemented for [`LoraLinear`], `Vec<T>` (paths `prefix.0`, `prefix.1`, ...), `Option<T>` and
/// `Box<T>`; implement it for your own structs with [`lora_module!`](crate::lora_module).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use lora_core::{lora_layer_paths, LoraLinear, LoraModule};
///
/// let device = Default::default();
/// let layers: Vec<LoraLinear<NdArray>> = (0..2)
///     .map(|_| LoraLinear::new(LinearConfig::new(4, 4).init(&device)))
///     .collect();
/// assert_eq!(lora_layer_paths(&layers, "block"), ["block.0", "block.1"]);
/// ```
pub trait LoraModule<B: Backend> {
    /// Calls `visit` with the path and layer of every `LoraLinear` inside, depth first, in
    /// field order.
    fn visit_lora(&self, prefix: &str, visit: &mut dyn FnMut(&str, &LoraLinear<B>));

    /// Like [`visit_lora`](Self::visit_lora), with mutable access.
    fn visit_lora_mut(&mut self, prefix: &str, visit: &mut dyn FnMut(&str, &mut LoraLinear<B>));

    /// The module names an adapter targets on this model when its `target_modules` is unset
    /// (PEFT's per-architecture defaults, e.g. `["q", "v"]` for T5); `None` (the default) when
    /// the model has no such defaults and adapters must name their targets.
    fn default_target_modules(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// The model's input and output embedding layers among its LoRA layers (transformers'
    /// `get_input_embeddings` / `get_output_embeddings`): those whose base weight PEFT's
    /// `save_embedding_layers` writes into an adapter file, when an adapter targets one of
    /// [`EMBEDDING_LAYER_NAMES`]. None by default, as PEFT writes none for a model that is not
    /// a transformers model; T5 names its head.
    fn embedding_layer_paths(&self) -> Vec<String> {
        Vec::new()
    }

    /// Module paths of layers that become LoRA layers only when an adapter targets them, as
    /// PEFT wraps a module only at injection: layers whose weight is shared with another one
    /// (T5's `lm_head` tied to the embedding, its stacks' `embed_tokens`). Target matching
    /// considers them beside the visited layers; [`wrap_lora_layer`](Self::wrap_lora_layer)
    /// makes one a LoRA layer. None by default. Paths are from the model's root.
    fn wrappable_lora_paths(&self) -> Vec<String> {
        Vec::new()
    }

    /// Makes the layer at `path` (one of [`wrappable_lora_paths`](Self::wrappable_lora_paths))
    /// a LoRA layer without adapters, computing what it computed before; returns whether it
    /// did (false for a path that is not wrappable or already wrapped).
    fn wrap_lora_layer(&mut self, path: &str) -> bool {
        let _ = path;
        false
    }

    /// Undoes [`wrap_lora_layer`](Self::wrap_lora_layer) for a layer that holds no adapter
    /// (after a failed load); returns whether it did.
    fn unwrap_lora_layer(&mut self, path: &str) -> bool {
        let _ = path;
        false
    }
}

/// PEFT's `EMBEDDING_LAYER_NAMES`: the module names of embedding-like layers, whose base weight
/// an adapter file may carry.
///
/// ```
/// assert_eq!(lora_core::EMBEDDING_LAYER_NAMES, ["embed_tokens", "lm_head"]);
/// ```
pub const EMBEDDING_LAYER_NAMES: [&str; 2] = ["embed_tokens", "lm_head"];

/// Joins a module path and a child name with a dot (no dot after an empty prefix).
///
/// ```
/// assert_eq!(lora_core::join_module_path("", "encoder"), "encoder");
/// assert_eq!(lora_core::join_module_path("encoder", "block"), "encoder.block");
/// ```
pub fn join_module_path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The paths of every LoRA layer in `module`, in visiting order.
pub fn lora_layer_paths<B: Backend, M: LoraModule<B> + ?Sized>(
    module: &M,
    prefix: &str,
) -> Vec<String> {
    let mut paths = Vec::new();
    module.visit_lora(prefix, &mut |path, _| paths.push(path.to_string()));
    paths
}

impl<B: Backend> LoraModule<B> for LoraLinear<B> {
    fn visit_lora(&self, prefix: &str, visit: &mut dyn FnMut(&str, &LoraLinear<B>)) {
        visit(prefix, self);
    }

    fn visit_lora_mut(&mut self, prefix: &str, visit: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
        visit(prefix, self);
    }
}

impl<B: Backend, T: LoraModule<B>> LoraModule<B> for Vec<T> {
    fn visit_lora(&self, prefix: &str, visit: &mut dyn FnMut(&str, &LoraLinear<B>)) {
        for (i, item) in self.iter().enumerate() {
            item.visit_lora(&join_module_path(prefix, &i.to_string()), visit);
        }
    }

    fn visit_lora_mut(&mut self, prefix: &str, visit: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
        for (i, item) in self.iter_mut().enumerate() {
            item.visit_lora_mut(&join_module_path(prefix, &i.to_string()), visit);
        }
    }
}

impl<B: Backend, T: LoraModule<B>> LoraModule<B> for Option<T> {
    fn visit_lora(&self, prefix: &str, visit: &mut dyn FnMut(&str, &LoraLinear<B>)) {
        if let Some(item) = self {
            item.visit_lora(prefix, visit);
        }
    }

    fn visit_lora_mut(&mut self, prefix: &str, visit: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
        if let Some(item) = self {
            item.visit_lora_mut(prefix, visit);
        }
    }
}

impl<B: Backend, T: LoraModule<B>> LoraModule<B> for Box<T> {
    fn visit_lora(&self, prefix: &str, visit: &mut dyn FnMut(&str, &LoraLinear<B>)) {
        self.as_ref().visit_lora(prefix, visit);
    }

    fn visit_lora_mut(&mut self, prefix: &str, visit: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
        self.as_mut().visit_lora_mut(prefix, visit);
    }

    fn default_target_modules(&self) -> Option<&'static [&'static str]> {
        self.as_ref().default_target_modules()
    }

    fn embedding_layer_paths(&self) -> Vec<String> {
        self.as_ref().embedding_layer_paths()
    }

    fn wrappable_lora_paths(&self) -> Vec<String> {
        self.as_ref().wrappable_lora_paths()
    }

    fn wrap_lora_layer(&mut self, path: &str) -> bool {
        self.as_mut().wrap_lora_layer(path)
    }

    fn unwrap_lora_layer(&mut self, path: &str) -> bool {
        self.as_mut().unwrap_lora_layer(path)
    }
}

/// Implements [`LoraModule`] for a struct generic over `B: Backend` by listing the fields that
/// hold LoRA layers, each optionally with the name it has in the module path (for Hugging Face
/// names that are not snake case).
///
/// ```
/// use burn::module::Module;
/// use burn::nn::LinearConfig;
/// use burn::tensor::backend::Backend;
/// use lora_core::{lora_layer_paths, lora_module, LoraLinear};
///
/// #[derive(Module, Debug)]
/// struct Attention<B: Backend> {
///     q: LoraLinear<B>,
///     v: LoraLinear<B>,
/// }
/// lora_module!(Attention { q, v });
///
/// #[derive(Module, Debug)]
/// struct Layer<B: Backend> {
///     self_attention: Attention<B>,
/// }
/// lora_module!(Layer { self_attention as "SelfAttention" });
///
/// let device = Default::default();
/// let lora = || LoraLinear::<burn::backend::NdArray>::new(LinearConfig::new(4, 4).init(&device));
/// let layer = Layer { self_attention: Attention { q: lora(), v: lora() } };
/// assert_eq!(lora_layer_paths(&layer, "layer"), ["layer.SelfAttention.q", "layer.SelfAttention.v"]);
/// ```
#[macro_export]
macro_rules! lora_module {
    ($ty:ident { $($field:ident $(as $name:literal)?),* $(,)? }) => {
        impl<B: $crate::burn::tensor::backend::Backend> $crate::LoraModule<B> for $ty<B> {
            fn visit_lora(
                &self,
                prefix: &str,
                visit: &mut dyn FnMut(&str, &$crate::LoraLinear<B>),
            ) {
                $(
                    $crate::LoraModule::<B>::visit_lora(
                        &self.$field,
                        &$crate::join_module_path(prefix, $crate::lora_module!(@name $field $($name)?)),
                        visit,
                    );
                )*
            }

            fn visit_lora_mut(
                &mut self,
                prefix: &str,
                visit: &mut dyn FnMut(&str, &mut $crate::LoraLinear<B>),
            ) {
                $(
                    $crate::LoraModule::<B>::visit_lora_mut(
                        &mut self.$field,
                        &$crate::join_module_path(prefix, $crate::lora_module!(@name $field $($name)?)),
                        visit,
                    );
                )*
            }
        }
    };
    (@name $field:ident $name:literal) => { $name };
    (@name $field:ident) => { stringify!($field) };
}
