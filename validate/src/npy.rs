//! NumPy `.npy` arrays of floats: the logit dumps other engines write with `np.save`.
//!
//! Parses the header of the format (numpy `lib/format.py`, versions 1.0–3.0):
//!
//! ```text
//! "\x93NUMPY" major minor | header_len (u16 LE for 1.x, u32 LE for 2.x/3.x) | header | data
//! header: a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 12, 416), }
//! ```
//!
//! and borrows the data. Accepted element types: little-endian `f4`, `f2`, and bfloat16 —
//! written by ml_dtypes as the 2-byte void `'<V2'` (or `'|V2'`), or spelled `'bfloat16'`.
//! Everything is checked against the byte length before use: the header size is capped as
//! numpy caps it, the element count and byte size use checked arithmetic, and the data must
//! fill the rest of the file exactly (a truncated or padded file is an error).

use recast_convert::DType;

/// numpy's own default cap on the header (`max_header_size=10000` in `np.load`).
pub const MAX_HEADER_LEN: usize = 10_000;
const MAGIC: &[u8] = b"\x93NUMPY";

/// A parsed array borrowing its data.
#[derive(Debug)]
pub struct Npy<'a> {
    pub dtype: DType,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// `numel · dtype size` bytes.
    pub data: &'a [u8],
}

/// What is wrong with an `.npy` file.
#[derive(Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    #[error("not an .npy file (no \\x93NUMPY magic)")]
    Magic,
    #[error("unsupported .npy version {0}.{1} (supported: 1.0, 2.0, 3.0)")]
    Version(u8, u8),
    #[error("file is {len} bytes, too short for {what} (needs {needed})")]
    Truncated { what: &'static str, needed: usize, len: usize },
    #[error("header is {0} bytes, larger than numpy's limit {MAX_HEADER_LEN}")]
    HeaderTooLarge(usize),
    #[error("header: {0}")]
    Header(String),
    #[error("element type '{0}' is not supported (expected '<f4', '<f2', or bfloat16 as '<V2')")]
    DType(String),
    #[error("Fortran-ordered arrays are not supported (save with np.ascontiguousarray)")]
    FortranOrder,
    #[error("shape {0:?} overflows the element or byte count")]
    Overflow(Vec<usize>),
    #[error("data is {found} bytes, but shape {shape:?} of {dtype} needs {expected}")]
    DataSize { shape: Vec<usize>, dtype: DType, expected: usize, found: usize },
}

/// Parses `bytes` (a whole `.npy` file).
pub fn parse(bytes: &[u8]) -> Result<Npy<'_>, NpyError> {
    let len = bytes.len();
    if len < MAGIC.len() + 2 || !bytes.starts_with(MAGIC) {
        return Err(if bytes.starts_with(&MAGIC[..len.min(MAGIC.len())]) && len > 0 {
            NpyError::Truncated { what: "the magic and version", needed: MAGIC.len() + 2, len }
        } else {
            NpyError::Magic
        });
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_bytes, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => return Err(NpyError::Version(major, minor)),
    };
    let start = 8 + len_bytes;
    if len < start {
        return Err(NpyError::Truncated { what: "the header length", needed: start, len });
    }
    let header_len = bytes[8..start].iter().rev().fold(0usize, |a, &b| (a << 8) | b as usize);
    if header_len > MAX_HEADER_LEN {
        return Err(NpyError::HeaderTooLarge(header_len));
    }
    let data_start = start + header_len;
    if len < data_start {
        return Err(NpyError::Truncated { what: "the header", needed: data_start, len });
    }
    let raw = &bytes[start..data_start];
    let text =
        if utf8 { std::str::from_utf8(raw).ok() } else { raw.is_ascii().then(|| std::str::from_utf8(raw).unwrap()) }
            .ok_or_else(|| NpyError::Header("not ASCII/UTF-8 text".into()))?;
    let header = parse_header(text)?;
    let size = header.dtype.size().expect("byte-sized dtype");
    let overflow = || NpyError::Overflow(header.shape.clone());
    let numel = header.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(overflow)?;
    let expected = numel.checked_mul(size).ok_or_else(overflow)?;
    let found = len - data_start;
    if found != expected {
        return Err(NpyError::DataSize { shape: header.shape, dtype: header.dtype, expected, found });
    }
    Ok(Npy { dtype: header.dtype, shape: header.shape, data: &bytes[data_start..] })
}

struct Header {
    dtype: DType,
    shape: Vec<usize>,
}

/// The element types this reader accepts, by `descr` string (one table).
const DESCRS: &[(&str, DType)] = &[
    ("<f4", DType::F32),
    ("<f2", DType::F16),
    ("<V2", DType::BF16),
    ("|V2", DType::BF16),
    ("bfloat16", DType::BF16),
    ("<bfloat16", DType::BF16),
];

fn parse_header(text: &str) -> Result<Header, NpyError> {
    let mut p = Lexer { s: text.trim_end().as_bytes(), i: 0 };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    p.expect(b'{')?;
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(NpyError::Header(format!("unexpected key '{other}'"))),
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(NpyError::Header(format!("trailing characters after the dict at byte {}", p.i)));
    }
    let missing = |k: &str| NpyError::Header(format!("missing key '{k}'"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    if fortran.ok_or_else(|| missing("fortran_order"))? {
        return Err(NpyError::FortranOrder);
    }
    let dtype =
        DESCRS.iter().find(|(d, _)| *d == descr).map(|&(_, t)| t).ok_or_else(|| NpyError::DType(descr.clone()))?;
    Ok(Header { dtype, shape: shape.ok_or_else(|| missing("shape"))? })
}

/// A tiny lexer for the dict literal numpy writes (strings, True/False, tuples of ints).
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        let hit = self.s.get(self.i) == Some(&c);
        self.i += hit as usize;
        hit
    }
    fn expect(&mut self, c: u8) -> Result<(), NpyError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(NpyError::Header(format!("expected '{}' at byte {}", c as char, self.i)))
        }
    }
    fn string(&mut self) -> Result<String, NpyError> {
        self.skip_ws();
        let q = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => return Err(NpyError::Header(format!("expected a string at byte {}", self.i))),
        };
        let start = self.i + 1;
        let end = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or_else(|| NpyError::Header("unterminated string".into()))?;
        self.i = start + end + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + end]).into_owned())
    }
    fn boolean(&mut self) -> Result<bool, NpyError> {
        self.skip_ws();
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(NpyError::Header(format!("expected True or False at byte {}", self.i)))
    }
    fn tuple(&mut self) -> Result<Vec<usize>, NpyError> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            self.skip_ws();
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap();
            let d = digits.parse().map_err(|_| NpyError::Header(format!("bad dimension at byte {start}")))?;
            dims.push(d);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.as_bytes().to_vec();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(b' ');
        }
        h.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out
    }

    const F32_2X3: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

    #[test]
    fn parses_what_numpy_writes() {
        let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let (fa, fb, fs) = (
            npy(F32_2X3, &data),
            npy("{'descr': '<V2', 'fortran_order': False, 'shape': (4,), }", &[0; 8]),
            npy("{'descr': '<f2', 'fortran_order': False, 'shape': (), }", &[0; 2]),
        );
        let a = parse(&fa).unwrap();
        assert_eq!((a.dtype, a.shape.as_slice(), a.data.len()), (DType::F32, &[2, 3][..], 24));
        assert_eq!(parse(&fb).unwrap().dtype, DType::BF16);
        let s = parse(&fs).unwrap();
        assert!(s.shape.is_empty());
    }

    #[test]
    fn rejects_truncated_and_padded_data() {
        let f = npy(F32_2X3, &[0; 23]);
        assert!(matches!(parse(&f), Err(NpyError::DataSize { expected: 24, found: 23, .. })));
        let f = npy(F32_2X3, &[0; 25]);
        assert!(matches!(parse(&f), Err(NpyError::DataSize { found: 25, .. })));
        let f = npy(F32_2X3, &[0; 24]);
        assert!(matches!(parse(&f[..20]), Err(NpyError::Truncated { .. })));
        assert!(matches!(parse(&f[..5]), Err(NpyError::Truncated { .. })));
        assert_eq!(parse(b"PK\x03\x04 not numpy").unwrap_err(), NpyError::Magic);
    }

    #[test]
    fn rejects_unsupported_layouts() {
        let e = |h: &str| parse(&npy(h, &[])).unwrap_err();
        assert_eq!(e("{'descr': '>f4', 'fortran_order': False, 'shape': (0,), }"), NpyError::DType(">f4".into()));
        assert_eq!(e("{'descr': '<f4', 'fortran_order': True, 'shape': (0,), }"), NpyError::FortranOrder);
        assert!(matches!(e("{'descr': '<f4', 'shape': (0,), }"), NpyError::Header(_)));
        assert!(matches!(e("{'descr': '<f4', 'fortran_order': False, 'shape': (0,) "), NpyError::Header(_)));
        let huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999999999), }";
        assert!(matches!(e(huge), NpyError::Overflow(_)));
        let mut v = npy(F32_2X3, &[0; 24]);
        v[6] = 4;
        assert_eq!(parse(&v).unwrap_err(), NpyError::Version(4, 0));
    }

    proptest::proptest! {
        /// The parser's fuzz target: any bytes, or a valid file with one byte changed and cut
        /// anywhere, give an array or an error, never a panic.
        #[test]
        fn never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                        at in 0usize..200, byte: u8, cut in 0usize..200) {
            let _ = parse(&tail);
            let mut v = b"\x93NUMPY\x01\x00".to_vec();
            v.extend_from_slice(&tail);
            let _ = parse(&v);
            let mut f = npy(F32_2X3, &[0; 24]);
            let i = at % f.len();
            f[i] = byte;
            f.truncate(cut.min(f.len()));
            let _ = parse(&f);
        }
    }

    #[test]
    fn caps_the_header_length() {
        let mut v = b"\x93NUMPY\x02\x00".to_vec();
        v.extend_from_slice(&(1u32 << 30).to_le_bytes());
        assert_eq!(parse(&v).unwrap_err(), NpyError::HeaderTooLarge(1 << 30));
    }
}
