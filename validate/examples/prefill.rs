//! Times one prefill of N tokens through the reference engine.
//!
//! `cargo run --release -p recast-validate --example prefill -- MODEL N [THREADS]`
//! Prints one JSON line: tokens, seconds, tokens_per_s. Used by bench/engine/run.py.

use recast_convert::Checkpoint;
use recast_validate::Engine;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (path, n) = (&args[1], args[2].parse::<usize>()?);
    let threads = args.get(3).map(|t| t.parse()).transpose()?.unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let ck = Checkpoint::open(path)?;
    let resident = std::env::var("RECAST_STREAM").is_err();
    let engine = Engine::new(&ck, threads)?.resident(resident);
    let vocab = engine.config.vocab_size as u32;
    let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    engine.forward(&[tokens[..n.min(8)].to_vec()])?; // warm the page cache
    let t = Instant::now();
    let logits = engine.forward(&[tokens])?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "{{\"tokens\": {n}, \"seconds\": {s:.4}, \"tokens_per_s\": {:.2}, \"checksum\": {}}}",
        n as f64 / s,
        logits[0].iter().map(|v| *v as f64).sum::<f64>()
    );
    Ok(())
}
