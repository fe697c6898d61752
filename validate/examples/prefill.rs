//! Times one prefill of N tokens through the reference engine.
//!
//! `cargo run --release -p recast-validate --example prefill -- MODEL N [THREADS]`
//! Prints one JSON line: tokens, seconds, tokens_per_s. Used by bench/engine/run.py.
//! `RECAST_PREFILL_REPS=k` runs the timed forward k times and reports the fastest.

use recast_convert::Checkpoint;
use recast_validate::Engine;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    recast_convert::alloc::retain_freed_memory(); // as the recast binary does
    let args: Vec<String> = std::env::args().collect();
    let (path, n) = (&args[1], args[2].parse::<usize>()?);
    let threads = args.get(3).map(|t| t.parse()).transpose()?.unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let ck = Checkpoint::open(path)?;
    let resident = std::env::var("RECAST_STREAM").is_err();
    let engine = Engine::new(&ck, threads)?.resident(resident);
    let vocab = engine.config.vocab_size as u32;
    let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    // Warm the page cache.
    engine.forward(&[tokens[..n.min(8)].to_vec()])?;
    let reps: usize = std::env::var("RECAST_PREFILL_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut s = f64::INFINITY;
    let mut logits = Vec::new();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        logits = engine.forward(std::slice::from_ref(&tokens))?;
        s = s.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"tokens\": {n}, \"seconds\": {s:.4}, \"tokens_per_s\": {:.2}, \"checksum\": {}}}",
        n as f64 / s,
        logits[0].iter().map(|v| *v as f64).sum::<f64>()
    );
    Ok(())
}
