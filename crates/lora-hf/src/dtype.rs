//! The element types Hugging Face files are written in, and the half-precision conversions
//! (the `half` crate's, round to nearest even as PyTorch).

/// The element type a file is written with.
///
/// ```
/// assert_eq!(lora_hf::WeightDtype::default(), lora_hf::WeightDtype::F32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDtype {
    /// 32-bit floats, PEFT's default.
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

/// bfloat16 bits to f32 (exact).
///
/// ```
/// assert_eq!(lora_hf::bf16_to_f32(0x3f80), 1.0);
/// ```
pub fn bf16_to_f32(bits: u16) -> f32 {
    half::bf16::from_bits(bits).to_f32()
}

/// f32 to bfloat16 bits, rounding to nearest even (NaN stays NaN), as PyTorch's `.to(bfloat16)`.
pub(crate) fn f32_to_bf16(value: f32) -> u16 {
    half::bf16::from_f32(value).to_bits()
}

/// IEEE half bits to f32 (exact).
///
/// ```
/// assert_eq!(lora_hf::f16_to_f32(0x3c00), 1.0);
/// ```
pub fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// f32 to IEEE half bits, rounding to nearest even, overflowing to infinity.
pub(crate) fn f32_to_f16(value: f32) -> u16 {
    half::f16::from_f32(value).to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_round_trips_exactly_representable_values() {
        for v in [
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            0.099975586,
            65504.0,
            6.1035156e-5,
            5.9604645e-8,
        ] {
            assert_eq!(f16_to_f32(f32_to_f16(v)), v, "f16 {v}");
        }
        for v in [0.0f32, 1.0, -3.140625, 2f32.powi(100), -(2f32.powi(-100))] {
            assert_eq!(bf16_to_f32(f32_to_bf16(v)), v, "bf16 {v}");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_and_overflow_is_infinite() {
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // halfway, even stays
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02); // halfway, odd rounds up
        assert_eq!(f32_to_f16(1.0e6), 0x7c00);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(f16_to_f32(0x0001), 5.9604645e-8);
        assert_eq!(f16_to_f32(0x8001), -5.9604645e-8);
    }
}
