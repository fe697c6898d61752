//! FP8 / integer codecs, packing and error statistics against the references in
//! `tests/fixtures/quant_numeric/` (ml_dtypes, torch, compressed-tensors; regenerate with
//! `gen.py`, see its README), plus property tests.

use proptest::prelude::*;
use recast_convert::{Checkpoint, DType, Storage};
use recast_quantize::codec::fp8::{self, Fp8Format, Granularity, ALL_FORMATS};
use recast_quantize::codec::int::{self, Group, IntSpec, ScaleRule};
use recast_quantize::codec::pack;
use recast_quantize::codec::stats::{self, ErrorStats};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

// ------------------------------------------------------------------------------------------
// Fixture access
// ------------------------------------------------------------------------------------------

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/quant_numeric")
}

fn manifest() -> &'static Value {
    static M: OnceLock<Value> = OnceLock::new();
    M.get_or_init(|| {
        let text = std::fs::read_to_string(dir().join("manifest.json")).expect("manifest.json");
        serde_json::from_str(&text).expect("manifest.json parses")
    })
}

struct Fixture(Checkpoint);

impl Fixture {
    fn open(name: &str) -> Fixture {
        Fixture(Checkpoint::open(dir().join(format!("{name}.safetensors"))).expect("fixture opens"))
    }

    fn raw(&self, name: &str) -> (DType, Vec<u64>, &[u8]) {
        let t = self.0.get(name).unwrap_or_else(|| panic!("fixture tensor {name} missing"));
        let Storage::Dense(dt) = t.storage else { panic!("{name}: not dense") };
        (dt, t.shape.clone(), self.0.bytes(t))
    }

    fn u8s(&self, name: &str) -> Vec<u8> {
        let (dt, _, b) = self.raw(name);
        assert!(matches!(dt, DType::U8 | DType::F8E4M3 | DType::F8E5M2 | DType::F8E4M3Fnuz), "{name}: {dt:?}");
        b.to_vec()
    }

    fn i8s(&self, name: &str) -> Vec<i8> {
        let (dt, _, b) = self.raw(name);
        assert_eq!(dt, DType::I8, "{name}");
        b.iter().map(|&v| v as i8).collect()
    }

    fn i32s(&self, name: &str) -> Vec<i32> {
        let (dt, _, b) = self.raw(name);
        assert_eq!(dt, DType::I32, "{name}");
        b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    fn u32s(&self, name: &str) -> Vec<u32> {
        let (dt, _, b) = self.raw(name);
        assert_eq!(dt, DType::U32, "{name}");
        b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    /// Float tensor (F32/BF16/F16) decoded exactly, with its dtype and shape.
    fn floats(&self, name: &str) -> (DType, Vec<u64>, Vec<f32>) {
        let (dt, shape, b) = self.raw(name);
        let v = match dt {
            DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            DType::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            d => panic!("{name}: {d:?} is not a float tensor"),
        };
        (dt, shape, v)
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        self.floats(name).2
    }
}

fn fmt_of(name: &str) -> Fp8Format {
    ALL_FORMATS.into_iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("format {name}"))
}

fn dtype_of(name: &str) -> DType {
    DType::from_name(name).unwrap_or_else(|| panic!("dtype {name}"))
}

/// Float equality by bit pattern, except that any NaN equals any NaN.
fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<_> = (0..got.len()).filter(|&i| !same_f32(got[i], want[i])).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} differ; first at {}: got {:e} ({:#010x}) want {:e} ({:#010x})",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        got[bad[0]].to_bits(),
        want[bad[0]],
        want[bad[0]].to_bits()
    );
}

/// The documented places where torch 2.15's cast differs from ml_dtypes (= [`fp8::cast`]).
fn torch_differs_as_documented(fmt: Fp8Format, x: f32, ours: u8, torch: u8) -> bool {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    match fmt {
        // torch saturates finite out-of-range values and ±inf to ±448.
        Fp8Format::E4M3Fn => !x.is_nan() && x.abs() > 448.0 && ours == 0x7F | sign && torch == 0x7E | sign,
        // torch's e5m2 NaN is 0x7F | sign, ml_dtypes' 0x7E | sign.
        Fp8Format::E5M2 => x.is_nan() && ours == 0x7E | sign && torch == 0x7F | sign,
        Fp8Format::E4M3Fnuz => false,
    }
}

// ------------------------------------------------------------------------------------------
// FP8 scalar casts
// ------------------------------------------------------------------------------------------

#[test]
fn fp8_cast_boundaries_match_ml_dtypes_and_torch() {
    let fx = Fixture::open("fp8_cast");
    let mut total = 0;
    for fmt in ALL_FORMATS {
        let n = fmt.name();
        let xs: Vec<f32> = fx.u32s(&format!("cast.{n}.in")).into_iter().map(f32::from_bits).collect();
        let ml = fx.u8s(&format!("cast.{n}.ml"));
        let tc = fx.u8s(&format!("cast.{n}.torch"));
        let ts = fx.u8s(&format!("cast.{n}.torch_sat"));
        let mut torch_diffs = 0;
        for (i, &x) in xs.iter().enumerate() {
            let c = fp8::cast(fmt, x);
            assert_eq!(c, ml[i], "{n}: cast({x:e} = {:#010x}) vs ml_dtypes", x.to_bits());
            if c != tc[i] {
                assert!(
                    torch_differs_as_documented(fmt, x, c, tc[i]),
                    "{n}: cast({x:e}) = {c:#04x}, torch {:#04x}",
                    tc[i]
                );
                torch_diffs += 1;
            }
            let s = fp8::cast_saturating(fmt, x);
            if s != ts[i] {
                assert!(
                    torch_differs_as_documented(fmt, x, s, ts[i]) && x.is_nan(),
                    "{n}: cast_saturating({x:e}) = {s:#04x}, torch clamp+cast {:#04x}",
                    ts[i]
                );
            }
        }
        // The manifest recorded the same torch/ml_dtypes disagreement count.
        let recorded: u64 = manifest()["fp8_cast"]["formats"][n]["torch_vs_ml_dtypes"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v["count"].as_u64().unwrap())
            .sum();
        assert_eq!(torch_diffs as u64, recorded, "{n}: torch disagreements");
        assert!(xs.len() > 3000, "{n}: boundary set too small");
        total += xs.len();
    }
    assert!(total > 10_000);
}

fn expand_rle(starts: &[i32], codes: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    for (k, (&s, &c)) in starts.iter().zip(codes).enumerate() {
        let end = starts.get(k + 1).map_or(n, |&e| e as usize);
        assert_eq!(out.len(), s as usize);
        out.resize(end, c);
    }
    out
}

#[test]
fn fp8_cast_f16_sweeps_match_ml_dtypes_and_torch() {
    let fx = Fixture::open("fp8_cast");
    let ks: Vec<f32> =
        manifest()["fp8_cast"]["sweep_k"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_eq!(ks.len(), 4);
    for fmt in ALL_FORMATS {
        let n = fmt.name();
        for (i, &k) in ks.iter().enumerate() {
            let p = format!("sweep.{n}.{i}");
            let ml = expand_rle(&fx.i32s(&format!("{p}.ml_start")), &fx.u8s(&format!("{p}.ml_code")), 65536);
            let tc = expand_rle(&fx.i32s(&format!("{p}.torch_start")), &fx.u8s(&format!("{p}.torch_code")), 65536);
            for b in 0..=u16::MAX {
                let x = half::f16::from_bits(b).to_f32() * k;
                let c = fp8::cast(fmt, x);
                assert_eq!(c, ml[b as usize], "{n} k={k}: cast({x:e}) (f16 {b:#06x}) vs ml_dtypes");
                if c != tc[b as usize] {
                    assert!(torch_differs_as_documented(fmt, x, c, tc[b as usize]), "{n} k={k}: cast({x:e}) vs torch");
                }
            }
        }
    }
}

#[test]
fn fp8_decode_matches_ml_dtypes_and_convert() {
    let fx = Fixture::open("fp8_cast");
    for fmt in ALL_FORMATS {
        let want = fx.f32s(&format!("decode.{}", fmt.name()));
        let got: Vec<f32> = (0..=255u8).map(|c| fp8::decode(fmt, c)).collect();
        assert_bits_eq(&format!("decode {}", fmt.name()), &got, &want);
        let all: Vec<u8> = (0..=255).collect();
        let mut conv = vec![0.0f32; 256];
        recast_convert::float::decode_to_f32(fmt.dtype(), &all, &mut conv);
        assert_bits_eq(&format!("convert decode {}", fmt.name()), &conv, &want);
        // Every finite code round-trips through cast; the largest finite is fmt.max().
        for c in 0..=255u8 {
            let v = fp8::decode(fmt, c);
            if v.is_finite() {
                assert_eq!(fp8::cast(fmt, v), c, "{}: cast(decode({c:#04x}))", fmt.name());
                assert!(v.abs() <= fmt.max());
            }
        }
        assert_eq!(fp8::cast(fmt, fmt.max()), fp8::cast_saturating(fmt, f32::INFINITY));
    }
}

#[test]
fn fp8_format_table() {
    assert_eq!(Fp8Format::E4M3Fn.dtype().name(), "F8_E4M3");
    assert_eq!(Fp8Format::E5M2.dtype().name(), "F8_E5M2");
    assert_eq!(Fp8Format::E4M3Fnuz.dtype().name(), "F8_E4M3FNUZ");
    assert_eq!([448.0, 57344.0, 240.0], ALL_FORMATS.map(|f| f.max()));
    for f in ALL_FORMATS {
        assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{}\"", f.name()));
        assert_eq!(Fp8Format::from_dtype(f.dtype()), Some(f));
    }
}

// ------------------------------------------------------------------------------------------
// FP8 weight quantization
// ------------------------------------------------------------------------------------------

fn granularity(v: &Value) -> Granularity {
    match v {
        Value::String(s) if s == "tensor" => Granularity::Tensor,
        Value::String(s) if s == "channel" => Granularity::Channel,
        Value::Object(o) => {
            let b = o["block"].as_array().unwrap();
            Granularity::Block { rows: b[0].as_u64().unwrap() as usize, cols: b[1].as_u64().unwrap() as usize }
        }
        v => panic!("granularity {v}"),
    }
}

#[test]
fn fp8_quantize_matches_reference() {
    let fx = Fixture::open("fp8_quant");
    let m = &manifest()["fp8_quant"];
    let w = fx.f32s(m["input"].as_str().unwrap());
    let cases = m["cases"].as_array().unwrap();
    let (mut n_codes, mut n_ct, mut n_ds) = (0, 0, 0);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let fmt = fmt_of(c["format"].as_str().unwrap());
        let (rows, cols) = (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize);
        let g = granularity(&c["granularity"]);
        let sdt = dtype_of(c["scale_dtype"].as_str().unwrap());
        let q = fp8::quantize(fmt, &w, rows, cols, g, sdt);
        assert_eq!(q, fp8::quantize_serial(fmt, &w, rows, cols, g, sdt), "{name}: parallel vs serial");
        let (sdt_file, sshape, scales) = fx.floats(&format!("fp8q.{name}.scales"));
        assert_eq!(sdt_file, sdt, "{name}: stored scale dtype");
        assert_eq!(sshape.iter().map(|&d| d as usize).collect::<Vec<_>>(), q.scale_shape.to_vec(), "{name}");
        assert_bits_eq(&format!("{name} scales"), &q.scales, &scales);
        let codes = fx.u8s(&format!("fp8q.{name}.codes"));
        assert_eq!(q.codes.len(), codes.len());
        if let Some(i) = (0..codes.len()).find(|&i| q.codes[i] != codes[i]) {
            panic!("{name}: code {i} = {:#04x}, want {:#04x} (w = {:e})", q.codes[i], codes[i], w[i]);
        }
        n_codes += codes.len();
        let deq = fp8::dequantize(fmt, &q, rows, cols, g);
        if c["ct_deq"].as_bool() == Some(true) {
            let (dt, _, ct) = fx.floats(&format!("fp8q.{name}.ct_deq"));
            assert_eq!(dt, sdt);
            let rounded: Vec<f32> = deq.iter().map(|&v| fp8::round_to_dtype(v, sdt)).collect();
            assert_bits_eq(&format!("{name}: compressed-tensors dequantize"), &rounded, &ct);
            n_ct += 1;
        }
        if c["f32_deq"].as_bool() == Some(true) {
            assert_bits_eq(&format!("{name}: q.float() * s"), &deq, &fx.f32s(&format!("fp8q.{name}.f32_deq")));
            let (dt, _, ds) = fx.floats(&format!("fp8q.{name}.ds_bf16"));
            assert_eq!(dt, DType::BF16);
            let rounded: Vec<f32> = deq.iter().map(|&v| fp8::round_to_dtype(v, DType::BF16)).collect();
            assert_bits_eq(&format!("{name}: DeepSeek bf16 dequant"), &rounded, &ds);
            n_ds += 1;
        }
    }
    assert_eq!(cases.len(), 21);
    assert!(n_codes >= 21 * 2048 && n_ct == 9 && n_ds == 3, "{n_codes} {n_ct} {n_ds}");
}

#[test]
fn fp8_edge_shapes_and_eps() {
    // All-zero input: every scale is the scale dtype's epsilon and every code is +0.
    for (sdt, eps) in [(DType::F32, f32::EPSILON), (DType::BF16, 0.0078125), (DType::F16, 0.0009765625)] {
        let q = fp8::quantize(Fp8Format::E4M3Fn, &[0.0; 6], 2, 3, Granularity::Channel, sdt);
        assert_eq!(q.scales, vec![eps; 2]);
        assert_eq!(q.codes, vec![0; 6]);
    }
    // Empty matrices.
    let q = fp8::quantize(Fp8Format::E5M2, &[], 0, 5, Granularity::Tensor, DType::F32);
    assert_eq!((q.scale_shape, q.scales.len()), ([1, 1], 1));
    let q = fp8::quantize(Fp8Format::E5M2, &[], 3, 0, Granularity::Block { rows: 2, cols: 2 }, DType::F32);
    assert_eq!(q.scale_shape, [2, 0]);
    assert!(fp8::dequantize(Fp8Format::E5M2, &q, 3, 0, Granularity::Block { rows: 2, cols: 2 }).is_empty());
    // Amax element maps to ±max exactly with an F32 scale.
    let w = [0.5f32, -3.0, 1.0, 2.0];
    let q = fp8::quantize(Fp8Format::E4M3Fn, &w, 1, 4, Granularity::Tensor, DType::F32);
    assert_eq!(q.codes[1], 0xFE);
}

// ------------------------------------------------------------------------------------------
// Integer quantization
// ------------------------------------------------------------------------------------------

fn spec_of(c: &Value) -> IntSpec {
    let group = match &c["group"] {
        Value::String(s) if s == "channel" => Group::Channel,
        v => Group::Size(v.as_u64().unwrap() as usize),
    };
    let rule = match c["rule"].as_str().unwrap() {
        "half-range" => ScaleRule::HalfRange,
        "max-q" => ScaleRule::MaxQ,
        r => panic!("rule {r}"),
    };
    IntSpec {
        bits: c["bits"].as_u64().unwrap() as u8,
        group,
        symmetric: c["symmetric"].as_bool().unwrap(),
        rule,
        scale_dtype: dtype_of(c["scale_dtype"].as_str().unwrap()),
    }
}

#[test]
fn int_quantize_matches_reference() {
    let fx = Fixture::open("int_quant");
    let m = &manifest()["int_quant"];
    let w = fx.f32s(m["input"].as_str().unwrap());
    let cases = m["cases"].as_array().unwrap();
    let mut n_ct = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let spec = spec_of(c);
        let (rows, cols) = (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize);
        int::check_shape(rows, cols, &spec).unwrap();
        let q = int::quantize(&w, rows, cols, &spec);
        assert_eq!(q, int::quantize_serial(&w, rows, cols, &spec), "{name}: parallel vs serial");
        let (sdt, _, scales) = fx.floats(&format!("intq.{name}.scales"));
        assert_eq!(sdt, spec.scale_dtype);
        assert_eq!(q.groups_per_row, spec.groups_per_row(cols));
        assert_bits_eq(&format!("{name} scales"), &q.scales, &scales);
        if spec.symmetric {
            assert!(q.zeros.is_none());
        } else {
            assert_eq!(q.zeros.as_deref().unwrap(), fx.i8s(&format!("intq.{name}.zeros")), "{name}: zero points");
        }
        let codes = fx.i8s(&format!("intq.{name}.codes"));
        if let Some(i) = (0..codes.len()).find(|&i| q.codes[i] != codes[i]) {
            panic!("{name}: code {i} = {}, want {} (w = {:e})", q.codes[i], codes[i], w[i]);
        }
        let (ddt, _, deq_want) = fx.floats(&format!("intq.{name}.deq"));
        assert_eq!(ddt, spec.scale_dtype, "{name}: dequantized dtype");
        assert_bits_eq(&format!("{name}: dequantize"), &int::dequantize(&q, rows, cols, &spec), &deq_want);
        if c["deq"] == "compressed-tensors" {
            n_ct += 1;
        }
    }
    assert_eq!((cases.len(), n_ct), (20, 16));
}

#[test]
fn int_check_shape_and_edges() {
    let spec = IntSpec {
        bits: 4,
        group: Group::Size(128),
        symmetric: true,
        rule: ScaleRule::HalfRange,
        scale_dtype: DType::BF16,
    };
    assert!(int::check_shape(4, 256, &spec).is_ok());
    assert!(int::check_shape(4, 200, &spec).unwrap_err().contains("multiple of the group size 128"));
    assert!(int::check_shape(4, 256, &IntSpec { bits: 9, ..spec }).is_err());
    assert!(int::check_shape(4, 256, &IntSpec { scale_dtype: DType::F8E4M3, ..spec }).is_err());
    assert!(int::check_shape(4, 256, &IntSpec { group: Group::Size(0), ..spec }).is_err());
    // Zero rows / columns.
    let ch = IntSpec { group: Group::Channel, symmetric: false, ..spec };
    let q = int::quantize(&[], 2, 0, &ch);
    assert_eq!((q.scales.len(), q.zeros.as_ref().unwrap().len(), q.groups_per_row), (2, 2, 1));
    let q = int::quantize(&[], 0, 256, &spec);
    assert!(q.codes.is_empty() && q.scales.is_empty());
    // All-zero asymmetric group: eps scale, zero point qmin, exact reconstruction.
    let q = int::quantize(&[0.0; 128], 1, 128, &IntSpec { symmetric: false, ..spec });
    assert_eq!((q.scales[0], q.zeros.as_ref().unwrap()[0]), (0.0078125, -8));
    assert!(int::dequantize(&q, 1, 128, &IntSpec { symmetric: false, ..spec }).iter().all(|&v| v == 0.0));
}

// ------------------------------------------------------------------------------------------
// Packing
// ------------------------------------------------------------------------------------------

#[test]
fn pack_int32_matches_compressed_tensors() {
    let fx = Fixture::open("pack");
    let cases = manifest()["pack"]["int32_cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let bits = c["bits"].as_u64().unwrap() as u8;
        let (rows, cols) = (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize);
        let codes = fx.i8s(&format!("pack.{name}.codes"));
        let dim1 = fx.i32s(&format!("pack.{name}.dim1"));
        let dim0 = fx.i32s(&format!("pack.{name}.dim0"));
        assert_eq!(pack::pack_int32_rows(&codes, rows, cols, bits), dim1, "{name}: packed_dim=1");
        assert_eq!(pack::pack_int32_cols(&codes, rows, cols, bits), dim0, "{name}: packed_dim=0");
        assert_eq!(pack::unpack_int32_rows(&dim1, rows, cols, bits), codes, "{name}: unpack dim 1");
        assert_eq!(pack::unpack_int32_cols(&dim0, rows, cols, bits), codes, "{name}: unpack dim 0");
        let s1 = c["dim1_shape"].as_array().unwrap();
        assert_eq!(s1[1].as_u64().unwrap() as usize, pack::packed_len(cols, bits), "{name}");
    }
    assert_eq!(cases.len(), 40);
}

#[test]
fn pack_int4_ascend_matches_msmodelslim() {
    let fx = Fixture::open("pack");
    let cases = manifest()["pack"]["ascend_int4_cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (rows, cols) = (c["rows"].as_u64().unwrap() as usize, c["cols"].as_u64().unwrap() as usize);
        let codes = fx.i8s(&format!("ascend.{name}.codes"));
        let pc = fx.i8s(&format!("ascend.{name}.per_channel"));
        let pg = fx.i8s(&format!("ascend.{name}.per_group"));
        assert_eq!(pack::pack_int4_ascend(&codes, rows, cols, false), pc, "{name}: per-channel [n, k/2]");
        assert_eq!(pack::pack_int4_ascend(&codes, rows, cols, true), pg, "{name}: per-group [n/2, k]");
        assert_eq!(pack::unpack_int4_ascend(&pc, rows, cols, false), codes);
        assert_eq!(pack::unpack_int4_ascend(&pg, rows, cols, true), codes);
    }
    assert_eq!(cases.len(), 3);
}

// ------------------------------------------------------------------------------------------
// Stats
// ------------------------------------------------------------------------------------------

fn stats_vectors(n: usize) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = (0..n as i64).map(|i| ((i * 7919) % 1000 - 500) as f32 / 37.0f32).collect();
    let y = x.iter().enumerate().map(|(i, &v)| v + (((i as i64) * 104729 % 201 - 100) as f32) * 1e-4f32).collect();
    (x, y)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

#[test]
fn stats_match_numpy() {
    let cases = manifest()["stats"]["cases"].as_array().unwrap();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let n = c["n"].as_u64().unwrap() as usize;
        let (x, y) = match name {
            "noisy" => stats_vectors(n),
            "exact" => (stats_vectors(n).0, stats_vectors(n).0),
            "zero_signal" => (vec![0.0; n], vec![1e-3; n]),
            "zero_both" => (vec![0.0; n], vec![0.0; n]),
            _ => panic!("{name}"),
        };
        let s = stats::error_stats(&x, &y);
        assert_eq!(s, stats::error_stats_serial(&x, &y), "{name}: parallel vs serial");
        assert!(close(s.max_abs, c["max_abs"].as_f64().unwrap()), "{name}: max_abs {}", s.max_abs);
        let sx = c["sum_x2"].as_f64().unwrap();
        let se = c["sum_e2"].as_f64().unwrap();
        match (sx > 0.0, se > 0.0) {
            (true, true) => {
                assert!(close(s.sqnr_db, c["sqnr_db"].as_f64().unwrap()), "{name}: sqnr {}", s.sqnr_db);
                assert!(close(s.rel_rmse, c["rel_rmse"].as_f64().unwrap()), "{name}: rel_rmse {}", s.rel_rmse);
            }
            (_, false) => {
                assert_eq!((s.sqnr_db, s.rel_rmse), (f64::INFINITY, 0.0), "{name}");
                assert!(s.is_exact());
            }
            (false, true) => {
                assert_eq!((s.sqnr_db, s.rel_rmse), (f64::NEG_INFINITY, f64::INFINITY), "{name}");
                assert!(!s.is_exact());
            }
        }
    }
}

#[test]
fn stats_serialize_non_finite_as_null() {
    let exact = stats::error_stats(&[1.0, 2.0], &[1.0, 2.0]);
    let j = serde_json::to_value(exact).unwrap();
    assert_eq!(j, serde_json::json!({"sqnr_db": null, "rel_rmse": 0.0, "max_abs": 0.0}));
    let back: ErrorStats = serde_json::from_value(j).unwrap();
    assert_eq!(back, exact);
    let j = serde_json::to_string(&stats::error_stats(&[0.0], &[1.0])).unwrap();
    assert_eq!(j, r#"{"sqnr_db":null,"rel_rmse":null,"max_abs":1.0}"#);
    assert!(stats::error_stats(&[1.0, f32::NAN], &[1.0, 1.0]).sqnr_db.is_nan());
    assert_eq!(stats::first_non_finite(&[1.0, 2.0, f32::INFINITY, f32::NAN]), Some((2, f32::INFINITY)));
    assert_eq!(stats::first_non_finite(&[1.0; 10_000]), None);
    let big: Vec<f32> = (0..100_000).map(|i| if i == 77_777 { f32::NAN } else { 1.0 }).collect();
    assert_eq!(stats::first_non_finite(&big).map(|p| p.0), Some(77_777));
}

// ------------------------------------------------------------------------------------------
// Properties
// ------------------------------------------------------------------------------------------

/// Bound on the relative rounding error of a stored scale `s` (half an ulp; F16 subnormals have
/// a fixed absolute spacing of 2^-24).
fn scale_unit(dt: DType, s: f64) -> f64 {
    match dt {
        DType::F32 => 2f64.powi(-24),
        DType::BF16 => 2f64.powi(-8),
        _ => 2f64.powi(-11).max(2f64.powi(-25) / s),
    }
}

fn matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..12, 1usize..40).prop_flat_map(|(r, c)| {
        let val = prop_oneof![3 => -100.0f32..100.0, 1 => Just(0.0f32), 1 => -1e-3f32..1e-3];
        (Just(r), Just(c), prop::collection::vec(val, r * c))
    })
}

fn fp8_gran() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::Tensor),
        Just(Granularity::Channel),
        (1usize..6, 1usize..20).prop_map(|(rows, cols)| Granularity::Block { rows, cols }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn fp8_round_trip_error_bound(
        (rows, cols, w) in matrix(),
        g in fp8_gran(),
        fi in 0usize..3,
        sdt in prop_oneof![Just(DType::F32), Just(DType::BF16), Just(DType::F16)],
    ) {
        let fmt = ALL_FORMATS[fi];
        let q = fp8::quantize(fmt, &w, rows, cols, g, sdt);
        prop_assert_eq!(&q, &fp8::quantize_serial(fmt, &w, rows, cols, g, sdt));
        let d = fp8::dequantize(fmt, &q, rows, cols, g);
        // The chunked reconstruction the error statistics use gives the same values.
        let table = fp8::decode_table(fmt);
        let mut pieces = vec![0f32; d.len()];
        let (mut start, mut k) = (0, 0);
        while start < d.len() {
            // Uneven pieces that start and end anywhere in a row.
            let end = (start + 1 + (k * 7) % 13).min(d.len());
            fp8::dequantize_range(&table, &q, cols, g, start, &mut pieces[start..end]);
            start = end;
            k += 1;
        }
        prop_assert_eq!(d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), pieces.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let [_, nbc] = q.scale_shape;
        let (br, bc) = match g {
            Granularity::Tensor => (rows, cols),
            Granularity::Channel => (1, cols),
            Granularity::Block { rows, cols } => (rows, cols),
        };
        let (mant, emin) = match fmt { Fp8Format::E4M3Fn => (3, -6), Fp8Format::E5M2 => (2, -14), Fp8Format::E4M3Fnuz => (3, -7) };
        for r in 0..rows {
            for c in 0..cols {
                let i = r * cols + c;
                let s = f64::from(q.scales[(r / br) * nbc + c / bc]);
                let x = f64::from(w[i]);
                // half a step of the fp8 grid at |x| (normal or subnormal), plus the clamp that a
                // scale rounded down by the scale dtype can cause, plus f32 slack.
                let bound = x.abs() * 2f64.powi(-(mant + 1)) + s * 2f64.powi(emin - mant - 1)
                    + x.abs() * 2.0 * scale_unit(sdt, s) + x.abs() * 1e-6 + 1e-30;
                let err = (x - f64::from(d[i])).abs();
                prop_assert!(err <= bound, "{} w={} deq={} s={} err={} bound={}", fmt.name(), x, d[i], s, err, bound);
            }
        }
    }

    #[test]
    fn int_round_trip_error_bound(
        (rows, c0, w0) in matrix(),
        bits in prop_oneof![Just(4u8), Just(8u8), Just(2u8), Just(6u8)],
        gsel in 0usize..3,
        symmetric in any::<bool>(),
        maxq in any::<bool>(),
        sdt in prop_oneof![Just(DType::F32), Just(DType::BF16), Just(DType::F16)],
    ) {
        // Make the column count a multiple of the group size by repeating columns.
        let gsize = [4usize, 8, 0][gsel];
        let cols = if gsize == 0 { c0 } else { c0.div_ceil(gsize) * gsize };
        let w: Vec<f32> = (0..rows * cols).map(|i| w0[(i / cols) * c0 + (i % cols) % c0]).collect();
        let group = if gsize == 0 { Group::Channel } else { Group::Size(gsize) };
        let rule = if maxq { ScaleRule::MaxQ } else { ScaleRule::HalfRange };
        let spec = IntSpec { bits, group, symmetric, rule, scale_dtype: sdt };
        prop_assert!(int::check_shape(rows, cols, &spec).is_ok());
        let q = int::quantize(&w, rows, cols, &spec);
        prop_assert_eq!(&q, &int::quantize_serial(&w, rows, cols, &spec));
        let (qmin, qmax) = spec.range();
        prop_assert!(q.codes.iter().all(|&c| (qmin..=qmax).contains(&i32::from(c))));
        let d = int::dequantize(&q, rows, cols, &spec);
        let glen = spec.group_len(cols);
        for i in 0..rows * cols {
            let s = f64::from(q.scales[(i / cols) * q.groups_per_row + (i % cols) / glen]);
            let u = scale_unit(sdt, s);
            let x = f64::from(w[i]);
            // half a step, plus what a scale rounded down by the scale dtype can clamp away,
            // plus the final rounding of the product to the scale dtype.
            let bound = s * (0.5 + 2.0 * f64::from(1u32 << bits) * u) + x.abs() * 2.0 * u + s * 1e-5 + 1e-30;
            let err = (x - f64::from(d[i])).abs();
            prop_assert!(err <= bound, "{:?} w={} deq={} s={} err={} bound={}", spec, x, d[i], s, err, bound);
        }
    }

    #[test]
    fn pack_round_trips(rows in 0usize..20, cols in 0usize..70, bits in 1u8..=8, seed in any::<u64>()) {
        let (qmin, qmax) = (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1);
        let span = (qmax - qmin + 1) as u64;
        let mix = |i: usize| seed.wrapping_add(i as u64).wrapping_mul(6364136223846793005).rotate_right(29);
        let codes: Vec<i8> = (0..rows * cols).map(|i| (qmin + (mix(i) % span) as i32) as i8).collect();
        let p1 = pack::pack_int32_rows(&codes, rows, cols, bits);
        prop_assert_eq!(p1.len(), rows * pack::packed_len(cols, bits));
        prop_assert_eq!(pack::unpack_int32_rows(&p1, rows, cols, bits), codes.clone());
        let p0 = pack::pack_int32_cols(&codes, rows, cols, bits);
        prop_assert_eq!(p0.len(), pack::packed_len(rows, bits) * cols);
        prop_assert_eq!(pack::unpack_int32_cols(&p0, rows, cols, bits), codes.clone());
        if bits == 4 && rows % 2 == 0 && cols % 2 == 0 {
            for along in [false, true] {
                let p = pack::pack_int4_ascend(&codes, rows, cols, along);
                prop_assert_eq!(pack::unpack_int4_ascend(&p, rows, cols, along), codes.clone());
            }
        }
    }

    #[test]
    fn stats_parallel_equals_serial(v in prop::collection::vec(-1e3f32..1e3, 0..20_000), k in 0.5f32..1.5) {
        let y: Vec<f32> = v.iter().map(|&x| x * k).collect();
        prop_assert_eq!(stats::error_stats(&v, &y), stats::error_stats_serial(&v, &y));
    }
}
