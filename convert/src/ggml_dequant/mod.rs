//! ggml block dequantizers (placeholder: being written).
use crate::ggml_type::GgmlType;

/// True if [`dequantize`] supports `ty`.
pub fn can_dequantize(_ty: GgmlType) -> bool {
    false
}

/// Decodes `src` (whole blocks of `ty`) into `dst` (`dst.len()` elements).
pub fn dequantize(ty: GgmlType, _src: &[u8], _dst: &mut [f32]) {
    unimplemented!("dequantize {ty}")
}
