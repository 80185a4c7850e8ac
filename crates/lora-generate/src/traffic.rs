//! Counting the bytes generation moves between the device and the host.

use std::cell::Cell;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::GenerationError;

/// The bytes one [`generate`](crate::generate) call read back from the device and wrote to it,
/// besides the model's own inputs.
///
/// ```
/// let traffic = lora_generate::HostTraffic::default();
/// assert_eq!((traffic.to_host(), traffic.to_device()), (0, 0));
/// ```
#[derive(Debug, Default, Clone)]
pub struct HostTraffic {
    to_host: Cell<u64>,
    to_device: Cell<u64>,
    steps: Cell<u64>,
}

impl HostTraffic {
    /// Bytes read back to the host.
    pub fn to_host(&self) -> u64 {
        self.to_host.get()
    }

    /// Bytes written to the device.
    pub fn to_device(&self) -> u64 {
        self.to_device.get()
    }

    /// Decoding steps run.
    pub fn steps(&self) -> u64 {
        self.steps.get()
    }

    pub(crate) fn step(&self) {
        self.steps.set(self.steps.get() + 1);
    }

    /// The values of a float tensor on the host.
    pub(crate) fn floats<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D>,
    ) -> Result<Vec<f32>, GenerationError> {
        let values = tensor
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| GenerationError::invalid(format!("could not read scores: {e:?}")))?;
        self.add_to_host(values.len() * 4);
        Ok(values)
    }

    /// The values of an integer tensor on the host.
    pub(crate) fn ints<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D, Int>,
    ) -> Result<Vec<i64>, GenerationError> {
        let data = tensor.into_data();
        let bytes = data.bytes.len();
        let values = data
            .convert::<i64>()
            .to_vec::<i64>()
            .map_err(|e| GenerationError::invalid(format!("could not read token ids: {e:?}")))?;
        self.add_to_host(bytes);
        Ok(values)
    }

    /// Counts `count` token ids (`u32`) a model gave to the host directly.
    pub(crate) fn ids_to_host(&self, count: usize) {
        self.add_to_host(count * 4);
    }

    /// Token ids (or other integers) as a device tensor of `shape`.
    pub(crate) fn int_tensor<B: Backend, const D: usize>(
        &self,
        values: Vec<i64>,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D, Int> {
        self.to_device
            .set(self.to_device.get() + values.len() as u64 * 8);
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// Floats as a device tensor of `shape`.
    pub(crate) fn float_tensor<B: Backend, const D: usize>(
        &self,
        values: Vec<f32>,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        self.to_device
            .set(self.to_device.get() + values.len() as u64 * 4);
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn add_to_host(&self, bytes: usize) {
        self.to_host.set(self.to_host.get() + bytes as u64);
    }
}
