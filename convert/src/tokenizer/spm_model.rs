//! A minimal reader for SentencePiece `tokenizer.model` files (protobuf `ModelProto`): only the
//! pieces, which is all llama.cpp's converter takes from it.
//!
//! ```text
//! ModelProto     { repeated SentencePiece pieces = 1; TrainerSpec 2; NormalizerSpec 3; … }
//! SentencePiece  { string piece = 1; float score = 2; Type type = 3 [default = NORMAL]; }
//! Type           NORMAL 1 | UNKNOWN 2 | CONTROL 3 | USER_DEFINED 4 | BYTE 6 | UNUSED 5
//! wire           tag = varint(field << 3 | kind); kind 0 varint, 1 fixed64, 2 len-prefixed, 5 fixed32
//! ```
//! Every length is checked against the bytes left before it is used; unknown fields are skipped.

use crate::error::{Error, Result};
use std::path::Path;

/// SentencePiece's piece type enum (`sentencepiece_model.proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    fn from_proto(v: u64) -> Option<Self> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

/// Parses the pieces of a `ModelProto`; `path` is for error messages only.
pub fn parse_pieces(bytes: &[u8], path: &Path) -> Result<Vec<Piece>> {
    let mut r = Reader { bytes, pos: 0, path };
    let mut pieces = Vec::new();
    while !r.done() {
        let (field, kind) = r.tag()?;
        if field == 1 && kind == 2 {
            let body = r.len_prefixed()?;
            pieces.push(parse_piece(body, path, pieces.len())?);
        } else {
            r.skip(kind)?;
        }
    }
    Ok(pieces)
}

fn parse_piece(bytes: &[u8], path: &Path, index: usize) -> Result<Piece> {
    let mut r = Reader { bytes, pos: 0, path };
    let mut piece = Piece { piece: String::new(), score: 0.0, kind: PieceType::Normal };
    while !r.done() {
        match r.tag()? {
            (1, 2) => {
                let raw = r.len_prefixed()?;
                piece.piece = String::from_utf8(raw.to_vec())
                    .map_err(|_| r.error(format!("piece {index} is not valid UTF-8")))?;
            }
            (2, 5) => piece.score = f32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")),
            (3, 0) => {
                let v = r.varint()?;
                piece.kind =
                    PieceType::from_proto(v).ok_or_else(|| r.error(format!("piece {index} has unknown type {v}")))?;
            }
            (_, kind) => r.skip(kind)?,
        }
    }
    Ok(piece)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn error(&self, what: String) -> Error {
        Error::Tokenizer { detail: format!("{}: byte {}: {what}", self.path.display(), self.pos) }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(self.error(format!("field of {n} bytes but only {left} left")));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error("varint longer than 10 bytes".into()))
    }

    fn tag(&mut self) -> Result<(u64, u8)> {
        let t = self.varint()?;
        Ok((t >> 3, (t & 7) as u8))
    }

    fn len_prefixed(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()?;
        self.take(n)
    }

    fn skip(&mut self, kind: u8) -> Result<()> {
        match kind {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.len_prefixed().map(drop),
            5 => self.take(4).map(drop),
            k => Err(self.error(format!("unsupported protobuf wire type {k}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn piece(text: &str, score: f32, kind: Option<u64>) -> Vec<u8> {
        let mut body = vec![0x0a];
        varint(text.len() as u64, &mut body);
        body.extend_from_slice(text.as_bytes());
        body.push(0x15);
        body.extend_from_slice(&score.to_le_bytes());
        if let Some(k) = kind {
            body.push(0x18);
            varint(k, &mut body);
        }
        let mut out = vec![0x0a];
        varint(body.len() as u64, &mut out);
        out.extend(body);
        out
    }

    #[test]
    fn parses_pieces_and_skips_other_fields() {
        let mut bytes = piece("<unk>", 0.0, Some(2));
        bytes.extend(piece("▁the", -1.5, None));
        bytes.extend([0x12, 0x02, 0x08, 0x02]); // trainer_spec { model_type: BPE }
        bytes.extend(piece("<0x0A>", 0.0, Some(6)));
        let pieces = parse_pieces(&bytes, Path::new("t.model")).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].kind, PieceType::Unknown);
        assert_eq!(pieces[1], Piece { piece: "▁the".into(), score: -1.5, kind: PieceType::Normal });
        assert_eq!(pieces[2].kind, PieceType::Byte);
    }

    #[test]
    fn rejects_truncated_field() {
        let mut bytes = piece("abc", 0.0, None);
        bytes.truncate(bytes.len() - 2);
        assert!(matches!(parse_pieces(&bytes, Path::new("t.model")), Err(Error::Tokenizer { .. })));
    }

    #[test]
    fn rejects_unknown_piece_type() {
        let bytes = piece("abc", 0.0, Some(9));
        assert!(matches!(parse_pieces(&bytes, Path::new("t.model")), Err(Error::Tokenizer { .. })));
    }
}
