//! The floor velollm's candle numbers are compared against: a bare candle greedy loop with no harness, on
//! the same file, prompt and thread count.
//!
//! ```text
//! cargo run --release -p velollm-candle --example bare_decode -- MODEL.gguf [THREADS] [TOKENS] [RUNS]
//! ```
//! Prints the prompt rate and the decode rate ((tokens − 1) / time from the first to the last token, the
//! formula velollm uses) for each run. Only the tokenizer comes from velollm (outside the timed region).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
// candle 0.11.1's own Gemma 3 module computes a different function (see velollm_candle::gemma3).
use velollm_candle::gemma3::Gemma3;

const PROMPT: &str = "Write a hello world program in Python";

enum Model {
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Gemma3(Gemma3),
}

impl Model {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Model::Llama(m) => m.forward(x, pos),
            Model::Qwen2(m) => m.forward(x, pos),
            Model::Gemma3(m) => m.forward(x, pos),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: bare_decode MODEL.gguf [THREADS] [TOKENS] [RUNS]")?;
    let threads: u32 = args.get(1).map_or(Ok(2), |s| s.parse())?;
    let tokens: usize = args.get(2).map_or(Ok(128), |s| s.parse())?;
    let runs: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    // Before any candle call: its pools are sized once, on first use.
    velollm_candle::configure_threads(threads)?;

    let header = velollm_gguf::GgufFile::read(Path::new(path), velollm_gguf::ReadOptions { keep_arrays: true })?;
    let prompt = velollm_candle::Tokenizer::from_gguf(&header)?.encode(PROMPT);
    let device = Device::Cpu;
    let mut reader = BufReader::new(File::open(path)?);
    let content = gguf_file::Content::read(&mut reader)?;
    let mut model = match header.architecture() {
        Some("llama") => Model::Llama(quantized_llama::ModelWeights::from_gguf(content, &mut reader, &device)?),
        Some("qwen2") => Model::Qwen2(quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, &device)?),
        Some("gemma3") => Model::Gemma3(Gemma3::from_gguf(&content, &mut reader, prompt.len() + tokens, &device)?),
        other => return Err(format!("unsupported architecture {other:?}").into()),
    };

    // One untimed warm-up run, then the timed ones.
    for run in 0..=runs {
        let start = Instant::now();
        let logits = model.forward(&Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?, 0)?;
        let mut next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        let first_token = Instant::now();
        let prefill_s = first_token.duration_since(start).as_secs_f64();
        for i in 0..tokens - 1 {
            let logits = model.forward(&Tensor::new(&[next], &device)?.unsqueeze(0)?, prompt.len() + i)?;
            next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
        }
        let decode_s = first_token.elapsed().as_secs_f64();
        if run > 0 {
            println!(
                "run {run}: prompt {:.1} tok/s ({} tokens), decode {:.2} tok/s ({tokens} tokens)",
                prompt.len() as f64 / prefill_s,
                prompt.len(),
                (tokens - 1) as f64 / decode_s
            );
        }
    }
    Ok(())
}
