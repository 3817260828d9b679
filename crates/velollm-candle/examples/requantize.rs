//! Writes a copy of a GGUF model with every 2-D weight requantized to Q4_0 or Q8_0, the types candle has
//! SIMD kernels for, so candle and llama.cpp can be compared on a file neither runs through scalar code.
//!
//! ```text
//! cargo run --release -p velollm-candle --example requantize -- IN.gguf OUT.gguf q4_0|q8_0
//! ```
//! 1-D tensors (norms, biases) keep their type; `general.file_type` is updated to llama.cpp's number for
//! the new type. Weights are dequantized and quantized again, so the copy is a slightly different model
//! than the original (a Q4_1 → Q8_0 copy loses nothing further; → Q4_0 loses a little).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, target] = args.as_slice() else {
        eprintln!("usage: requantize IN.gguf OUT.gguf q4_0|q8_0");
        return ExitCode::FAILURE;
    };
    match requantize(input, output, target) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn requantize(input: &str, output: &str, target: &str) -> Result<String, String> {
    // llama.cpp's `general.file_type` numbers (LLAMA_FTYPE_MOSTLY_Q4_0 = 2, _Q8_0 = 7).
    let (dtype, file_type) = match target.to_ascii_lowercase().as_str() {
        "q4_0" => (GgmlDType::Q4_0, 2u32),
        "q8_0" => (GgmlDType::Q8_0, 7u32),
        other => return Err(format!("unsupported target type '{other}' (supported: q4_0, q8_0)")),
    };
    let mut reader = BufReader::new(File::open(input).map_err(|e| format!("cannot open {input}: {e}"))?);
    let content = gguf_file::Content::read(&mut reader).map_err(|e| format!("{input}: {e}"))?;
    let device = Device::Cpu;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    // Keep the original tensor order (by data offset), as llama.cpp writes files.
    names.sort_by_key(|name| content.tensor_infos[*name].offset);

    let block = dtype.block_size();
    let mut tensors = Vec::with_capacity(names.len());
    let mut converted = 0;
    for name in &names {
        let tensor = content.tensor(&mut reader, name, &device).map_err(|e| format!("{name}: {e}"))?;
        let dims = tensor.shape().dims().to_vec();
        // Only matrices whose rows split into whole blocks; 1-D tensors stay as they are.
        let quantize = dims.len() == 2 && dims[1] % block == 0 && tensor.dtype() != dtype;
        let tensor = if quantize {
            converted += 1;
            let dense = tensor.dequantize(&device).map_err(|e| format!("{name}: {e}"))?;
            QTensor::quantize(&dense, dtype).map_err(|e| format!("{name}: {e}"))?
        } else {
            tensor
        };
        tensors.push((name.as_str(), tensor));
    }

    let file_type_value = gguf_file::Value::U32(file_type);
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(key, value)| (key.as_str(), if key == "general.file_type" { &file_type_value } else { value }))
        .chain((!content.metadata.contains_key("general.file_type")).then_some(("general.file_type", &file_type_value)))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(name, t)| (*name, t)).collect();
    let mut writer = BufWriter::new(File::create(output).map_err(|e| format!("cannot create {output}: {e}"))?);
    gguf_file::write(&mut writer, &metadata, &tensor_refs).map_err(|e| format!("{output}: {e}"))?;
    Ok(format!("{output}: {converted} of {} tensors requantized to {target}", names.len()))
}
