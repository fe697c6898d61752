//! Element types of dense tensors: the safetensors dtype set, written once as a table.
//!
//! Every closed list is one table: the on-disk string, the size in bits and the safetensors
//! writer's sort rank all come from [`DTYPES`]. Sub-byte types (F4, F6) are carried so files
//! holding them can be read and inspected; recast never computes with them.
//!
//! Source: huggingface/safetensors `safetensors/src/tensor.rs` (`Dtype`, `bitsize`), see
//! `shared/research/formats.md` §1.2.

use std::fmt;

/// A dense element type. The discriminant is the safetensors crate's enum order, which the
/// reference writer uses to lay tensors out (descending rank, then ascending name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    F4,
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

/// One row of the dtype table.
pub struct DTypeInfo {
    pub dtype: DType,
    /// The string safetensors headers use.
    pub name: &'static str,
    /// Size of one element in bits.
    pub bits: u32,
}

/// The dtype table, in the safetensors enum order.
pub const DTYPES: &[DTypeInfo] = &[
    DTypeInfo { dtype: DType::Bool, name: "BOOL", bits: 8 },
    DTypeInfo { dtype: DType::F4, name: "F4", bits: 4 },
    DTypeInfo { dtype: DType::F6E2M3, name: "F6_E2M3", bits: 6 },
    DTypeInfo { dtype: DType::F6E3M2, name: "F6_E3M2", bits: 6 },
    DTypeInfo { dtype: DType::U8, name: "U8", bits: 8 },
    DTypeInfo { dtype: DType::I8, name: "I8", bits: 8 },
    DTypeInfo { dtype: DType::F8E5M2, name: "F8_E5M2", bits: 8 },
    DTypeInfo { dtype: DType::F8E4M3, name: "F8_E4M3", bits: 8 },
    DTypeInfo { dtype: DType::F8E8M0, name: "F8_E8M0", bits: 8 },
    DTypeInfo { dtype: DType::F8E4M3Fnuz, name: "F8_E4M3FNUZ", bits: 8 },
    DTypeInfo { dtype: DType::F8E5M2Fnuz, name: "F8_E5M2FNUZ", bits: 8 },
    DTypeInfo { dtype: DType::I16, name: "I16", bits: 16 },
    DTypeInfo { dtype: DType::U16, name: "U16", bits: 16 },
    DTypeInfo { dtype: DType::F16, name: "F16", bits: 16 },
    DTypeInfo { dtype: DType::BF16, name: "BF16", bits: 16 },
    DTypeInfo { dtype: DType::I32, name: "I32", bits: 32 },
    DTypeInfo { dtype: DType::U32, name: "U32", bits: 32 },
    DTypeInfo { dtype: DType::F32, name: "F32", bits: 32 },
    DTypeInfo { dtype: DType::C64, name: "C64", bits: 64 },
    DTypeInfo { dtype: DType::F64, name: "F64", bits: 64 },
    DTypeInfo { dtype: DType::I64, name: "I64", bits: 64 },
    DTypeInfo { dtype: DType::U64, name: "U64", bits: 64 },
];

impl DType {
    pub const ALL: &'static [DTypeInfo] = DTYPES;

    fn info(self) -> &'static DTypeInfo {
        &DTYPES[self as usize]
    }

    /// The safetensors header string, e.g. `"BF16"`.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Bits per element.
    pub fn bits(self) -> u32 {
        self.info().bits
    }

    /// Bytes per element for byte-sized types; `None` for sub-byte types.
    pub fn size(self) -> Option<usize> {
        let bits = self.bits();
        bits.is_multiple_of(8).then_some(bits as usize / 8)
    }

    /// Parses a safetensors dtype string (exact, case-sensitive as the format defines it).
    pub fn from_name(name: &str) -> Option<DType> {
        DTYPES.iter().find(|d| d.name == name).map(|d| d.dtype)
    }

    /// True for the floating types recast can compute with (decode to f32).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F8E5M2
                | DType::F8E4M3
                | DType::F8E4M3Fnuz
                | DType::F8E5M2Fnuz
                | DType::F8E8M0
                | DType::F16
                | DType::BF16
                | DType::F32
                | DType::F64
        )
    }

    /// Byte length of `numel` elements, `None` on overflow or when the bits do not fill
    /// whole bytes.
    pub fn nbytes(self, numel: u64) -> Option<u64> {
        let bits = numel.checked_mul(self.bits() as u64)?;
        bits.is_multiple_of(8).then_some(bits / 8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_round_trips() {
        for (i, row) in DTYPES.iter().enumerate() {
            assert_eq!(row.dtype as usize, i, "row {} out of order", row.name);
            assert_eq!(DType::from_name(row.name), Some(row.dtype));
            assert_eq!(row.dtype.to_string(), row.name);
        }
        assert_eq!(DType::from_name("bf16"), None);
        assert_eq!(DType::from_name("F8_E4M3FN"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(DType::BF16.size(), Some(2));
        assert_eq!(DType::F4.size(), None);
        assert_eq!(DType::F4.nbytes(3), None);
        assert_eq!(DType::F4.nbytes(4), Some(2));
        assert_eq!(DType::F32.nbytes(u64::MAX), None);
    }
}
