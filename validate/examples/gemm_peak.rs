//! GEMM throughput of faer (the engine's matrix products) on one projection shape of a
//! 512-token SmolLM2 prefill, to compare the engine's time with the FLOP floor.
//!
//! `cargo run --release -p recast-validate --example gemm_peak -- [N K M]` (default 512 576
//! 1536: tokens × hidden → intermediate). Prints GFLOP/s of the best of 30 calls on 1 thread
//! and on 2 (bench/engine/README.md).

use faer::{Accum, MatMut, MatRef, Par};
use std::time::Instant;

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|v| v.parse().ok()).collect();
    let (n, k, m) = if a.len() == 3 { (a[0], a[1], a[2]) } else { (512, 576, 1536) };
    let x: Vec<f32> = (0..n * k).map(|i| (i % 97) as f32 * 0.01).collect();
    let w: Vec<f32> = (0..m * k).map(|i| (i % 89) as f32 * 0.01).collect();
    let mut y = vec![0f32; n * m];
    for threads in [1usize, 2] {
        let par = if threads == 1 { Par::Seq } else { Par::rayon(threads) };
        let mut best = f64::MAX;
        for _ in 0..30 {
            let t = Instant::now();
            // As kernels::linear: y[n, m] = x[n, k] · w[m, k]ᵀ, all row-major.
            let lhs = MatRef::from_row_major_slice(&x, n, k);
            let rhs = MatRef::from_row_major_slice(&w, m, k).transpose();
            let dst = MatMut::from_row_major_slice_mut(&mut y, n, m);
            faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{n}x{k}x{m}, {threads} thread(s): {:.1} GFLOP/s", 2.0 * (n * k * m) as f64 / best / 1e9);
    }
}
