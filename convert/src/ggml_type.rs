//! The ggml tensor type enum, written once as a table: id, on-disk name, block size and
//! bytes per block.
//!
//! Source: ggml `include/ggml.h`, `src/ggml.c` type_traits, `src/ggml-common.h`
//! (`shared/research/formats.md` §2.4). Ids whose types were removed from files (4, 5, 31–33,
//! 36–38) are known but have no block layout; ggml rejects them and so do we.

use crate::dtype::DType;
use std::fmt;

/// A ggml type id known to recast. The value is the on-disk `u32` id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(pub u32);

/// One row of the ggml type table.
pub struct GgmlTypeInfo {
    pub id: u32,
    pub name: &'static str,
    /// Elements per block (1 for plain element types); 0 for removed types.
    pub block_size: u32,
    /// Bytes per block; 0 for removed types.
    pub type_size: u32,
    /// The dense element type for unquantized ggml types.
    pub dense: Option<DType>,
}

const fn row(id: u32, name: &'static str, block_size: u32, type_size: u32) -> GgmlTypeInfo {
    GgmlTypeInfo { id, name, block_size, type_size, dense: None }
}
const fn dense(id: u32, name: &'static str, size: u32, dtype: DType) -> GgmlTypeInfo {
    GgmlTypeInfo { id, name, block_size: 1, type_size: size, dense: Some(dtype) }
}

/// Every ggml type id up to `GGML_TYPE_COUNT` (43 at ggml d99724f), indexed by id.
pub const GGML_TYPES: &[GgmlTypeInfo] = &[
    dense(0, "F32", 4, DType::F32),
    dense(1, "F16", 2, DType::F16),
    row(2, "Q4_0", 32, 18),
    row(3, "Q4_1", 32, 20),
    row(4, "Q4_2", 0, 0),
    row(5, "Q4_3", 0, 0),
    row(6, "Q5_0", 32, 22),
    row(7, "Q5_1", 32, 24),
    row(8, "Q8_0", 32, 34),
    row(9, "Q8_1", 32, 36),
    row(10, "Q2_K", 256, 84),
    row(11, "Q3_K", 256, 110),
    row(12, "Q4_K", 256, 144),
    row(13, "Q5_K", 256, 176),
    row(14, "Q6_K", 256, 210),
    row(15, "Q8_K", 256, 292),
    row(16, "IQ2_XXS", 256, 66),
    row(17, "IQ2_XS", 256, 74),
    row(18, "IQ3_XXS", 256, 98),
    row(19, "IQ1_S", 256, 50),
    row(20, "IQ4_NL", 32, 18),
    row(21, "IQ3_S", 256, 110),
    row(22, "IQ2_S", 256, 82),
    row(23, "IQ4_XS", 256, 136),
    dense(24, "I8", 1, DType::I8),
    dense(25, "I16", 2, DType::I16),
    dense(26, "I32", 4, DType::I32),
    dense(27, "I64", 8, DType::I64),
    dense(28, "F64", 8, DType::F64),
    row(29, "IQ1_M", 256, 56),
    dense(30, "BF16", 2, DType::BF16),
    row(31, "Q4_0_4_4", 0, 0),
    row(32, "Q4_0_4_8", 0, 0),
    row(33, "Q4_0_8_8", 0, 0),
    row(34, "TQ1_0", 256, 54),
    row(35, "TQ2_0", 256, 66),
    row(36, "IQ4_NL_4_4", 0, 0),
    row(37, "IQ4_NL_4_8", 0, 0),
    row(38, "IQ4_NL_8_8", 0, 0),
    row(39, "MXFP4", 32, 17),
    row(40, "NVFP4", 64, 36),
    row(41, "Q1_0", 128, 18),
    row(42, "Q2_0", 64, 18),
];

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q5_0: GgmlType = GgmlType(6);
    pub const Q5_1: GgmlType = GgmlType(7);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const Q2_K: GgmlType = GgmlType(10);
    pub const Q3_K: GgmlType = GgmlType(11);
    pub const Q4_K: GgmlType = GgmlType(12);
    pub const Q5_K: GgmlType = GgmlType(13);
    pub const Q6_K: GgmlType = GgmlType(14);
    pub const IQ4_NL: GgmlType = GgmlType(20);
    pub const BF16: GgmlType = GgmlType(30);
    pub const MXFP4: GgmlType = GgmlType(39);

    /// Looks up an on-disk id. `None` for ids past the table (unknown to this build).
    pub fn from_id(id: u32) -> Option<GgmlType> {
        ((id as usize) < GGML_TYPES.len()).then_some(GgmlType(id))
    }

    /// Looks up a type by its ggml name (`"Q4_K"`), case-insensitive.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(name)).map(|t| GgmlType(t.id))
    }

    /// The ggml type that stores a dense dtype, if ggml has one.
    pub fn from_dtype(dtype: DType) -> Option<GgmlType> {
        GGML_TYPES.iter().find(|t| t.dense == Some(dtype)).map(|t| GgmlType(t.id))
    }

    pub fn info(self) -> &'static GgmlTypeInfo {
        &GGML_TYPES[self.0 as usize]
    }
    pub fn name(self) -> &'static str {
        self.info().name
    }
    pub fn block_size(self) -> u32 {
        self.info().block_size
    }
    pub fn type_size(self) -> u32 {
        self.info().type_size
    }
    /// A type that may appear in a file (block size > 0).
    pub fn is_storable(self) -> bool {
        self.info().block_size > 0
    }
    /// True for block-quantized types (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.info().block_size > 1
    }
    pub fn dense(self) -> Option<DType> {
        self.info().dense
    }

    /// Bytes of a row-major tensor whose innermost dimension is `ne0`, with `nrows` rows.
    /// `None` on overflow or if `ne0` is not a whole number of blocks.
    pub fn nbytes(self, ne0: u64, nrows: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if bs == 0 || !ne0.is_multiple_of(bs) {
            return None;
        }
        (ne0 / bs).checked_mul(self.type_size() as u64)?.checked_mul(nrows)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_indexed_by_id() {
        for (i, t) in GGML_TYPES.iter().enumerate() {
            assert_eq!(t.id as usize, i, "{}", t.name);
            assert_eq!(GgmlType::from_name(t.name), Some(GgmlType(t.id)));
        }
        assert_eq!(GgmlType::from_id(43), None);
        assert!(!GgmlType(4).is_storable());
        assert_eq!(GgmlType::from_dtype(DType::BF16), Some(GgmlType::BF16));
    }

    #[test]
    fn nbytes_matches_block_layout() {
        assert_eq!(GgmlType::Q4_K.nbytes(512, 3), Some(2 * 144 * 3));
        assert_eq!(GgmlType::Q4_K.nbytes(100, 1), None);
        assert_eq!(GgmlType::F32.nbytes(7, 2), Some(56));
        assert_eq!(GgmlType::Q8_0.nbytes(u64::MAX - 31, u64::MAX), None);
    }
}
