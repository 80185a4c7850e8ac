//! One adapter per sample through the whole model (PEFT's `adapter_names`).

use burn::tensor::backend::Backend;
use lora_core::{LoraModelOps, LoraModule};

use crate::{T5Error, T5ForConditionalGeneration};

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// This model with every LoRA layer routed per sample: prompt `i` of a batch runs through
    /// adapter `names[i]` ([`lora_core::BASE_ONLY`], `"__base__"`, for none), in
    /// [`forward`](Self::forward), the losses and [`generate`](Self::generate), where the
    /// beams and returned sequences of a prompt keep its adapter (PEFT's `adapter_names`). Each
    /// layer gathers its samples' adapters into one batched product
    /// ([`lora_core::LoraLinear::forward_mixed`]); DoRA adapters take part too. The copy
    /// shares the weights.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Int, Tensor};
    /// use lora_core::{LoraConfig, LoraModule, BASE_ONLY};
    /// use lora_t5::{GenerationConfig, T5Config, T5ForConditionalGeneration};
    ///
    /// let config = T5Config { vocab_size: 40, d_model: 16, d_kv: 4, num_heads: 4, d_ff: 32,
    ///     num_layers: 1, num_decoder_layers: 1, ..T5Config::default() };
    /// let device = Default::default();
    /// let mut model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
    /// model.visit_lora_mut("", &mut |_, layer| layer.add_adapter("style", &LoraConfig::new(2, 4.0)).unwrap());
    /// let ids = Tensor::<NdArray, 2, Int>::from_ints([[5, 6, 1], [7, 8, 1]], &device);
    /// let mask = Tensor::<NdArray, 2, Int>::ones([2, 3], &device);
    /// let routed = model.with_adapter_names(&["style", BASE_ONLY]).unwrap();
    /// let out = routed.generate(ids, mask, &GenerationConfig { max_new_tokens: 3, num_beams: 2, ..Default::default() }).unwrap();
    /// assert_eq!(out.len(), 2);
    /// ```
    ///
    /// # Errors
    /// [`T5Error::Lora`] for a name no layer has, or while adapters are merged.
    pub fn with_adapter_names<S: AsRef<str>>(&self, names: &[S]) -> Result<Self, T5Error> {
        let mut routed = self.clone();
        routed.set_sample_adapters(Some(names))?;
        Ok(routed)
    }

    /// Refuses a batch other than the routing's number of names (a routed model's batch).
    pub(crate) fn check_routed_batch(&self, batch: usize) -> Result<(), T5Error> {
        let mut routed = None;
        self.visit_lora("", &mut |_, layer| {
            if routed.is_none() {
                routed = layer.sample_adapters().map(<[String]>::len);
            }
        });
        match routed {
            Some(names) if names != batch => Err(T5Error::InvalidInput {
                reason: format!(
                    "the model is routed to {names} adapter names (with_adapter_names), \
                     but the batch holds {batch} prompts"
                ),
            }),
            _ => Ok(()),
        }
    }
}
