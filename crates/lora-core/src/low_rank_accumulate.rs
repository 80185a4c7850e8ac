//! `y += s·(x·A)·B` written into the base layer's output on the flex backend: the up-projection
//! accumulates into `y` inside the GEMM (`gemm`'s `dst := dst + s·lhs·rhs`), so the unmerged
//! forward pass needs neither a `[tokens, d_output]` product of its own nor a pass to add it,
//! and both thin products are called directly, without a tensor operation each.

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_flex::FlexTensor;

use crate::flex_tensor::{float_primitive, from_flex, row_major_f32};
use crate::LoraAdapter;

/// Products (`tokens · d_output · r` multiply-adds) from which the up-projection runs on all
/// threads: the threshold the flex backend uses for its own products.
const PARALLEL_MIN_PRODUCTS: usize = 192 * 192 * 192;

/// `output + adapter(x)` without dropout (inference), with the up-projection accumulated into
/// `output`; `Err(output)` unchanged when `B` is not the flex backend or a tensor is not `f32`.
pub(crate) fn add_low_rank_update<B: Backend, const D: usize>(
    output: Tensor<B, D>,
    x: &Tensor<B, D>,
    adapter: &LoraAdapter<B>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if TypeId::of::<B::FloatTensorPrimitive>() != TypeId::of::<FlexTensor>()
        || output.dtype() != burn::tensor::DType::F32
    {
        return Err(output);
    }
    let dims = output.dims();
    let d_output = dims[D - 1];
    let tokens = dims[..D - 1].iter().product::<usize>();
    let rank = adapter.rank();
    let d_input = x.dims()[D - 1];
    let tensors = (
        float_primitive(x),
        float_primitive(&adapter.lora_a.val()),
        float_primitive(&adapter.lora_b.val()),
    );
    let (Some(x_flex), Some(down), Some(up)) = tensors else {
        return Err(output);
    };
    let (Some(x_values), Some(down), Some(up)) = (
        row_major_f32(&x_flex),
        row_major_f32(&down),
        row_major_f32(&up),
    ) else {
        return Err(output);
    };
    if x_values.len() != tokens * d_input
        || down.len() != d_input * rank
        || up.len() != rank * d_output
    {
        return Err(output);
    }
    // The down-projection `x·A` `[tokens, rank]`.
    let hidden = if tokens <= LOOP_MAX_TOKENS {
        down_projection_loop(&x_values, &down, d_input, rank)
    } else {
        let mut hidden = vec![0f32; tokens * rank];
        product_into(
            &mut hidden,
            false,
            &x_values,
            &down,
            [tokens, d_input, rank],
            1.0,
        );
        hidden
    };
    let Some(mut y) = unique_row_major(into_flex(output), dims) else {
        unreachable!("an f32 flex tensor has row-major values");
    };
    let Some(dst) = y.try_storage_mut::<f32>() else {
        unreachable!("a fresh tensor is not shared");
    };
    let scaling = adapter.scaling() as f32;
    if tokens <= LOOP_MAX_TOKENS {
        up_projection_loop(&hidden, &up, scaling, rank, dst);
    } else {
        product_into(dst, true, &hidden, &up, [tokens, rank, d_output], scaling);
    }
    Ok(from_flex(y).expect("flex checked above"))
}

/// `weight + Σ s·A·B` over `adapters`, each update accumulated into one copy of the weight by
/// the GEMM; `None` when the tensors are not the flex backend's `f32` ones.
pub(crate) fn merged_weight<'a, B: Backend + 'a>(
    weight: &Tensor<B, 2>,
    adapters: impl Iterator<Item = &'a LoraAdapter<B>>,
) -> Option<Tensor<B, 2>> {
    let [d_input, d_output] = weight.dims();
    let base = float_primitive(weight)?;
    let mut merged = row_major_f32(&base)?.into_owned();
    for adapter in adapters {
        let rank = adapter.rank();
        let (down, up) = (
            float_primitive(&adapter.lora_a.val())?,
            float_primitive(&adapter.lora_b.val())?,
        );
        let (down, up) = (row_major_f32(&down)?, row_major_f32(&up)?);
        if down.len() != d_input * rank || up.len() != rank * d_output {
            return None;
        }
        let scaling = adapter.scaling() as f32;
        product_into(
            &mut merged,
            true,
            &down,
            &up,
            [d_input, rank, d_output],
            scaling,
        );
    }
    crate::flex_tensor::tensor_from_f32(merged, [d_input, d_output])
}

/// `dst = (dst if accumulate) + scale · lhs · rhs` for row-major `lhs` `[m, k]`, `rhs` `[k, n]`
/// and `dst` `[m, n]` (`[m, k, n]` in `shape`).
fn product_into(
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    rhs: &[f32],
    [m, k, n]: [usize; 3],
    scale: f32,
) {
    assert!(dst.len() == m * n && lhs.len() == m * k && rhs.len() == k * n);
    // SAFETY: the three slices hold the row-major matrices of the shapes passed (asserted);
    // `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism(m * n * k),
        );
    }
}

/// `tensor` with unshared, row-major storage starting at offset 0 (copied if it is not so).
fn unique_row_major<const D: usize>(
    mut tensor: FlexTensor,
    dims: [usize; D],
) -> Option<FlexTensor> {
    let len = dims.iter().product::<usize>();
    let row_major = tensor.layout().contiguous_offsets() == Some((0, len));
    if !row_major || tensor.try_storage_mut::<f32>().is_none() {
        let values = row_major_f32(&tensor)?.into_owned();
        tensor = FlexTensor::from_data(burn::tensor::TensorData::new(values, dims));
    }
    Some(tensor)
}

/// Tokens up to which the two thin products run as plain loops: for decoding, the GEMM's own
/// set-up costs more than the arithmetic.
const LOOP_MAX_TOKENS: usize = 4;

/// `x · A` for a few rows of `x` (`[tokens, d_input]`, `A` `[d_input, rank]`).
fn down_projection_loop(x: &[f32], down: &[f32], d_input: usize, rank: usize) -> Vec<f32> {
    let mut hidden = vec![0f32; x.len() / d_input.max(1) * rank];
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx512_fma() {
        // SAFETY (each call): the CPU has the features; `x` holds whole rows of `d_input`, `A`
        // is `[d_input, rank]` and `hidden` has `rank` values per row of `x`.
        unsafe {
            match rank {
                16 => down_projection_avx512::<1>(x, down, d_input, &mut hidden),
                32 => down_projection_avx512::<2>(x, down, d_input, &mut hidden),
                48 => down_projection_avx512::<3>(x, down, d_input, &mut hidden),
                64 => down_projection_avx512::<4>(x, down, d_input, &mut hidden),
                _ => down_projection_body(x, down, d_input, rank, &mut hidden),
            }
        }
        return hidden;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx2_fma() {
        // SAFETY (each call): as above, with AVX2 and FMA.
        unsafe {
            match rank {
                8 => down_projection_avx2::<1>(x, down, d_input, &mut hidden),
                16 => down_projection_avx2::<2>(x, down, d_input, &mut hidden),
                32 => down_projection_avx2::<4>(x, down, d_input, &mut hidden),
                64 => down_projection_avx2::<8>(x, down, d_input, &mut hidden),
                _ => down_projection_body(x, down, d_input, rank, &mut hidden),
            }
        }
        return hidden;
    }
    down_projection_body(x, down, d_input, rank, &mut hidden);
    hidden
}

/// [`down_projection_loop`] for a rank of `8·V` with AVX2: the sums of each row in `V`
/// registers.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `down` is `[d_input, 8·V]`, `x` whole rows of `d_input` and
/// `out` `8·V` values per row of `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn down_projection_avx2<const V: usize>(
    x: &[f32],
    down: &[f32],
    d_input: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::{
        _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let rank = 8 * V;
    assert!(down.len() == d_input * rank);
    for (x, out) in x.chunks_exact(d_input).zip(out.chunks_exact_mut(rank)) {
        let mut sums = [_mm256_setzero_ps(); V];
        for (&x, a) in x.iter().zip(down.chunks_exact(rank)) {
            let x = _mm256_set1_ps(x);
            for (v, sum) in sums.iter_mut().enumerate() {
                // SAFETY: `a` holds `8·V` floats; the load is unaligned.
                let a = unsafe { _mm256_loadu_ps(a.as_ptr().add(8 * v)) };
                *sum = _mm256_fmadd_ps(x, a, *sum);
            }
        }
        for (v, &sum) in sums.iter().enumerate() {
            // SAFETY: `out` holds `8·V` floats; the store is unaligned.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * v), sum) };
        }
    }
}

/// [`down_projection_loop`] for a rank of `16·V`, the sums of each row in `2·V` registers (two
/// interleaved sets, so that the additions do not wait on each other).
///
/// # Safety
/// The CPU must have AVX-512F and FMA; `down` is `[d_input, 16·V]`, `x` whole rows of
/// `d_input` and `out` `16·V` values per row of `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn down_projection_avx512<const V: usize>(
    x: &[f32],
    down: &[f32],
    d_input: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_storeu_ps,
    };
    let rank = 16 * V;
    assert!(down.len() == d_input * rank);
    for (x, out) in x.chunks_exact(d_input).zip(out.chunks_exact_mut(rank)) {
        let mut sums = [[_mm512_setzero_ps(); V]; 2];
        for (i, (&x, a)) in x.iter().zip(down.chunks_exact(rank)).enumerate() {
            let x = _mm512_set1_ps(x);
            let sums = &mut sums[i % 2];
            for (v, sum) in sums.iter_mut().enumerate() {
                // SAFETY: `a` holds `16·V` floats; the load is unaligned.
                let a = unsafe { _mm512_loadu_ps(a.as_ptr().add(16 * v)) };
                *sum = _mm512_fmadd_ps(x, a, *sum);
            }
        }
        for (v, (&even, &odd)) in sums[0].iter().zip(&sums[1]).enumerate() {
            // SAFETY: `out` holds `16·V` floats; the store is unaligned.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * v), _mm512_add_ps(even, odd)) };
        }
    }
}

#[inline(always)]
fn down_projection_body(x: &[f32], down: &[f32], d_input: usize, rank: usize, out: &mut [f32]) {
    for (x, hidden) in x.chunks_exact(d_input).zip(out.chunks_exact_mut(rank)) {
        for (&x, a) in x.iter().zip(down.chunks_exact(rank)) {
            for (h, &a) in hidden.iter_mut().zip(a) {
                *h += x * a;
            }
        }
    }
}

/// `y += s · hidden · B` for a few rows (`hidden` `[tokens, rank]`, `B` `[rank, d_output]`).
fn up_projection_loop(hidden: &[f32], up: &[f32], scaling: f32, rank: usize, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx512_fma() {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { up_projection_avx512(hidden, up, scaling, rank, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { up_projection_avx2(hidden, up, scaling, rank, y) };
    }
    up_projection_body(hidden, up, scaling, rank, y)
}

/// [`up_projection_body`] compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn up_projection_avx2(hidden: &[f32], up: &[f32], scaling: f32, rank: usize, y: &mut [f32]) {
    up_projection_body(hidden, up, scaling, rank, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn up_projection_avx512(hidden: &[f32], up: &[f32], scaling: f32, rank: usize, y: &mut [f32]) {
    up_projection_body(hidden, up, scaling, rank, y)
}

#[inline(always)]
fn up_projection_body(hidden: &[f32], up: &[f32], scaling: f32, rank: usize, y: &mut [f32]) {
    let d_output = up.len() / rank.max(1);
    for (hidden, y) in hidden.chunks_exact(rank).zip(y.chunks_exact_mut(d_output)) {
        for (&h, b) in hidden.iter().zip(up.chunks_exact(d_output)) {
            let h = scaling * h;
            for (y, &b) in y.iter_mut().zip(b) {
                *y += h * b;
            }
        }
    }
}

fn parallelism(products: usize) -> gemm::Parallelism {
    if products >= PARALLEL_MIN_PRODUCTS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// The flex tensor behind `tensor`, by value (its storage stays unshared if it was).
fn into_flex<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> FlexTensor {
    let TensorPrimitive::Float(primitive) = tensor.into_primitive() else {
        unreachable!("an f32 tensor is a float primitive");
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    match boxed.downcast::<FlexTensor>() {
        Ok(flex) => *flex,
        Err(_) => unreachable!("the primitive type was checked to be FlexTensor"),
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::LinearConfig;

    /// The AVX2 loops called directly (so that they are tested on CPUs whose dispatch picks
    /// AVX-512), against the plain loops, for ranks 16 and 64 and three rows.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_projection_loops_match_the_plain_ones() {
        if !crate::flex_tensor::has_avx2_fma() {
            return;
        }
        let (d_input, d_output, tokens) = (40, 24, 3);
        let x: Vec<f32> = (0..tokens * d_input)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
            .collect();
        for rank in [16, 64] {
            let down: Vec<f32> = (0..d_input * rank)
                .map(|i| ((i * 7 % 31) as f32 - 15.0) / 30.0)
                .collect();
            let up: Vec<f32> = (0..rank * d_output)
                .map(|i| ((i * 11 % 23) as f32 - 11.0) / 22.0)
                .collect();
            let mut plain = vec![0f32; tokens * rank];
            super::down_projection_body(&x, &down, d_input, rank, &mut plain);
            let mut vector = vec![0f32; tokens * rank];
            // SAFETY: the CPU has AVX2 and FMA; the shapes are as the loops require.
            unsafe {
                match rank {
                    16 => super::down_projection_avx2::<2>(&x, &down, d_input, &mut vector),
                    _ => super::down_projection_avx2::<8>(&x, &down, d_input, &mut vector),
                }
            }
            for (v, p) in vector.iter().zip(&plain) {
                assert!((v - p).abs() <= 1e-5, "rank {rank}: {v} against {p}");
            }
            let (mut y_plain, mut y_vector) =
                (vec![1f32; tokens * d_output], vec![1f32; tokens * d_output]);
            super::up_projection_body(&plain, &up, 0.5, rank, &mut y_plain);
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { super::up_projection_avx2(&plain, &up, 0.5, rank, &mut y_vector) };
            assert_eq!(y_vector, y_plain, "rank {rank}");
        }
    }
    use burn::tensor::{Distribution, Tensor};
    use burn_flex::Flex;

    use crate::{LoraConfig, LoraInit, LoraLinear};

    fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    /// The layer's forward pass (accumulating) against base + Σ branch computed apart.
    fn check(tokens: usize, rank: usize, adapters: usize, bias: bool) {
        let device = Default::default();
        let base = LinearConfig::new(48, 80)
            .with_bias(bias)
            .init::<Flex>(&device);
        let config = LoraConfig::new(rank, 8.0).with_init_lora_weights(LoraInit::Random);
        let mut layer = LoraLinear::from_linear(base, &config).unwrap();
        let mut names = vec!["default".to_string()];
        for i in 1..adapters {
            let name = format!("extra{i}");
            layer
                .add_adapter(
                    &name,
                    &LoraConfig::new(2 + i, 3.0).with_init_lora_weights(LoraInit::Random),
                )
                .unwrap();
            names.push(name);
        }
        layer.set_active_adapters(&names).unwrap();
        // Non-zero up-projections, so that the update is visible.
        for adapter in &mut layer.adapters {
            let [r, o] = adapter.lora_b.dims();
            adapter.lora_b = burn::module::Param::from_tensor(Tensor::random(
                [r, o],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            ));
        }
        let x =
            Tensor::<Flex, 3>::random([2, tokens, 48], Distribution::Uniform(-1.0, 1.0), &device);
        let expected = layer
            .active_adapter_iter()
            .fold(layer.base_forward(x.clone()), |y, adapter| {
                y + adapter.branch(x.clone())
            });
        let first = layer.active_adapter_iter().next().unwrap();
        assert!(
            super::add_low_rank_update(layer.base_forward(x.clone()), &x, first).is_ok(),
            "the accumulating path applies to flex tensors"
        );
        let merged = super::merged_weight(&layer.base.weight.val(), layer.active_adapter_iter());
        assert!(merged.is_some(), "the merged weight is built on flex");
        let expected = values(expected);
        let scale = expected.iter().fold(1.0f32, |s, v| s.max(v.abs()));
        for (path, found) in [
            ("factored", values(layer.forward_factored(x.clone()))),
            ("materialized", values(layer.forward_materialized(x))),
        ] {
            for (i, (f, e)) in found.iter().zip(&expected).enumerate() {
                assert!(
                    (f - e).abs() <= 1e-5 * scale,
                    "{path}, element {i}: {f} against {e}"
                );
            }
        }
    }

    #[test]
    fn one_adapter_accumulates_into_the_base_output() {
        check(7, 4, 1, true);
    }

    #[test]
    fn several_adapters_accumulate_in_turn() {
        check(3, 4, 3, false);
    }

    #[test]
    fn one_token_with_rank_16() {
        check(1, 16, 1, true);
    }

    #[test]
    fn few_tokens_with_rank_64() {
        check(2, 64, 1, false);
    }
}
