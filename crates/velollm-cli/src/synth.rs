//! `velollm synth`: write a synthetic GGUF model with the exact shapes of a public architecture.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use velollm_synth::{
    check_replaceable, write_model, write_vocabulary, PendingFile, SynthError, SynthSpec, Vocabulary, WriteError,
    ARCHITECTURES,
};

/// Exit status of a write stopped by Ctrl-C (128 + SIGINT); nothing is left behind.
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Args)]
pub struct SynthArgs {
    /// The public model whose shapes to copy: llama-3.2-1b, llama-3.2-3b, llama-3.1-8b, qwen2.5-7b, … (--list).
    #[arg(long, required_unless_present = "list")]
    like: Option<String>,
    /// Weight type: q4_0, q8_0 or f16. Norms stay F32; with q4_0 the output matrix is Q6_K, as llama-quantize
    /// makes it.
    #[arg(long, default_value = "q4_0")]
    quant: String,
    /// Where to write the GGUF file (written to a temporary name, renamed when complete).
    #[arg(short, long, required_unless_present = "list")]
    output: Option<PathBuf>,
    /// Write only this many of the architecture's layers (small files for tests).
    #[arg(long)]
    layers: Option<u32>,
    /// Seed of the random weights (the same seed gives the same file).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tokenizer source: a GGUF file or a name from models/manifest.tsv (default: the shape's, e.g.
    /// smollm2-135m for Llama shapes, padded to the shape's vocabulary size).
    #[arg(long)]
    vocab: Option<String>,
    /// Write only the tokenizer (a GGUF file of about 1 MB without tensors), to pass later as --vocab on a
    /// machine that has none of the test models.
    #[arg(long)]
    vocab_only: bool,
    /// Threads generating the weights (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
    /// List the known shapes with their sizes, and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: SynthArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        show(&list());
        return Ok(ExitCode::SUCCESS);
    }
    let like = args.like.as_deref().unwrap_or_default();
    let spec = SynthSpec::new(like, &args.quant, args.layers, args.seed)?;
    let output = args.output.clone().unwrap_or_default();
    // Checked before anything slow: an unwritable path or a real model in the way must not cost a write.
    check_replaceable(&output)?;
    let pending = PendingFile::create(&output).map_err(SynthError::from)?;

    let vocab_reference = args.vocab.as_deref().unwrap_or(spec.arch.vocab_source);
    let vocab_path = velollm_models::resolve_model(vocab_reference)
        .map_err(|e| anyhow::anyhow!("the tokenizer comes from {vocab_reference}: {e}"))?;
    let vocab = Vocabulary::read(&vocab_path)?;
    if args.vocab_only {
        let bytes = write_vocabulary(&vocab, pending)?;
        show(&format!(
            "Wrote {}: the tokenizer of {} ({} tokens, {} bytes); use it with --vocab\n",
            output.display(),
            vocab.source,
            vocab.token_count(),
            group(bytes)
        ));
        return Ok(ExitCode::SUCCESS);
    }

    let a = &spec.arch;
    show(&format!(
        "Writing {}: {} shape, {} of {} layers, d_model {}, {}/{} heads, FFN {}, vocab {} ({} tokens from {} \
         + padding), {}, seed {} ...\n",
        output.display(),
        a.name,
        spec.layers,
        a.block_count,
        a.embedding_length,
        a.head_count,
        a.head_count_kv,
        a.feed_forward_length,
        a.vocab_size,
        vocab.token_count(),
        vocab.source,
        spec.quant.name(),
        spec.seed,
    ));
    let cancel = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(Arc::clone(&cancel));
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let written = match write_model(&spec, &vocab, pending, threads, Some(&cancel)) {
        Ok(written) => written,
        Err(SynthError::Write(WriteError::Interrupted(path))) => {
            eprintln!("interrupted: nothing written to {}", path.display());
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
        Err(e) => return Err(e.into()),
    };
    let seconds = written.elapsed.as_secs_f64();
    show(&format!(
        "Wrote {}: SYNTHETIC {} ({}), {} tensors ({}), {:.3}B parameters, {} bytes in {:.2} s ({:.0} MB/s)\n\
         Random weights: benchmarks like the real model; its generated text is meaningless.\n",
        output.display(),
        spec.display_name(),
        spec.quant.name(),
        written.tensors,
        written.types,
        written.parameters as f64 / 1e9,
        group(written.bytes),
        seconds,
        written.bytes as f64 / 1e6 / seconds.max(1e-9),
    ));
    Ok(ExitCode::SUCCESS)
}

/// The known shapes, with their parameter counts and file sizes per type.
fn list() -> String {
    let mut text = format!(
        "{:<14} {:<7} {:>6} {:>7} {:>9} {:>8} {:>6} {:>8} {:>5} {:>7} {:>9} {:>9} {:>9}\n",
        "shape",
        "arch",
        "layers",
        "d_model",
        "heads/kv",
        "head_dim",
        "FFN",
        "vocab",
        "tied",
        "params",
        "Q4_0",
        "Q8_0",
        "F16"
    );
    for arch in ARCHITECTURES {
        let spec = |quant| SynthSpec::new(arch.name, quant, None, 0).expect("a listed shape");
        let gb = |quant| format!("{:.2} GB", spec(quant).data_bytes() as f64 / 1e9);
        text.push_str(&format!(
            "{:<14} {:<7} {:>6} {:>7} {:>9} {:>8} {:>6} {:>8} {:>5} {:>6.2}B {:>9} {:>9} {:>9}\n",
            arch.name,
            arch.gguf_arch,
            arch.block_count,
            arch.embedding_length,
            format!("{}/{}", arch.head_count, arch.head_count_kv),
            arch.head_dim,
            arch.feed_forward_length,
            arch.vocab_size,
            if arch.tied_embeddings { "yes" } else { "no" },
            spec("q4_0").parameter_count() as f64 / 1e9,
            gb("q4_0"),
            gb("q8_0"),
            gb("f16"),
        ));
    }
    text.push_str("Sizes are tensor data; the tokenizer adds 1–10 MB. Sources: docs/synth.md.\n");
    text
}

/// First Ctrl-C: stop writing at the next piece and remove the partial file.
fn watch_ctrl_c(cancel: Arc<AtomicBool>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.store(true, Ordering::Relaxed);
            }
        });
    }
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes to stdout, ignoring a closed pipe.
fn show(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
