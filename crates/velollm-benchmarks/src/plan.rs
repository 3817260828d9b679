//! The plan: parameter lists and tests turned into an ordered list of instances, each one row.
//!
//! Instances are ordered like llama-bench's: model slowest, then backend, then load parameters, then context
//! parameters, then tests, so a model is loaded once per distinct set of load parameters and a context is
//! created only when a context parameter changes. Pure data: tested without any model.

use velollm_core::{
    ContextParams, DeviceSelection, FlashAttention, GpuLayers, KvCacheType, LoadParams, SplitMode, TensorSplit,
};

use crate::BenchError;

pub use velollm_core::{AutoRepetitions, Repetitions, TestCase};

/// `n_ctx` 0 in a [`SweepSpec`] (no `--ctx-size`): each context is sized as llama-bench sizes it. A
/// llama-bench test gets exactly the tokens it puts in the cache, `n_prompt + n_gen + n_depth` (llama.cpp then
/// pads it; the row records both), and a text test gets the 2048 of [`ContextParams::with_threads`].
pub const CTX_PER_TEST: u32 = 0;

/// The context `test` runs in: `context` itself, or, with [`CTX_PER_TEST`], sized for the test. A batched
/// test's context holds its B sequences (`n_seq_max`), whatever its size.
pub fn sized_for_test(context: &ContextParams, test: &TestCase) -> ContextParams {
    let n_seq_max = match test {
        TestCase::Tokens { test, .. } => test.sequences(),
        TestCase::Text(_) => 1,
    };
    if context.n_ctx != CTX_PER_TEST {
        return ContextParams { n_seq_max, ..context.clone() };
    }
    let n_ctx = match test {
        TestCase::Tokens { test, .. } => u32::try_from(test.context_needed()).unwrap_or(u32::MAX).max(1),
        TestCase::Text(_) => ContextParams::with_threads(context.n_threads).n_ctx,
    };
    ContextParams { n_ctx, n_seq_max, ..context.clone() }
}

/// Every list a sweep takes.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSpec {
    /// Model references as the user typed them.
    pub models: Vec<String>,
    /// Backend names, resolved (no `auto`).
    pub backends: Vec<String>,
    pub n_gpu_layers: Vec<GpuLayers>,
    pub split_mode: Vec<SplitMode>,
    pub main_gpu: Vec<u32>,
    pub use_mmap: Vec<bool>,
    /// Offload devices (`-dev`): `auto`, `none` or named devices.
    pub devices: Vec<DeviceSelection>,
    /// Layer proportions per device (`-ts`).
    pub tensor_split: Vec<TensorSplit>,
    pub n_ctx: Vec<u32>,
    pub n_batch: Vec<u32>,
    pub n_ubatch: Vec<u32>,
    pub n_threads: Vec<u32>,
    pub flash_attn: Vec<FlashAttention>,
    pub type_k: Vec<KvCacheType>,
    pub type_v: Vec<KvCacheType>,
    pub tests: Vec<TestCase>,
}

impl SweepSpec {
    /// One model, one backend, llama-bench's default parameters with `threads`, and `tests`.
    pub fn single(model: &str, backend: &str, threads: u32, tests: Vec<TestCase>) -> SweepSpec {
        let load = LoadParams::default();
        let context = ContextParams::with_threads(threads);
        SweepSpec {
            models: vec![model.to_string()],
            backends: vec![backend.to_string()],
            n_gpu_layers: vec![load.n_gpu_layers],
            split_mode: vec![load.split_mode],
            main_gpu: vec![load.main_gpu],
            use_mmap: vec![load.use_mmap],
            devices: vec![load.devices],
            tensor_split: vec![load.tensor_split],
            n_ctx: vec![context.n_ctx],
            n_batch: vec![context.n_batch],
            n_ubatch: vec![context.n_ubatch],
            n_threads: vec![context.n_threads],
            flash_attn: vec![context.flash_attn],
            type_k: vec![context.type_k],
            type_v: vec![context.type_v],
            tests,
        }
    }

    fn load_params(&self) -> Vec<LoadParams> {
        let mut all = Vec::new();
        for &n_gpu_layers in &self.n_gpu_layers {
            for &split_mode in &self.split_mode {
                for &main_gpu in &self.main_gpu {
                    for &use_mmap in &self.use_mmap {
                        for devices in &self.devices {
                            for tensor_split in &self.tensor_split {
                                all.push(LoadParams {
                                    n_gpu_layers,
                                    split_mode,
                                    main_gpu,
                                    use_mmap,
                                    devices: devices.clone(),
                                    tensor_split: tensor_split.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        all
    }

    fn context_params(&self) -> Vec<ContextParams> {
        let mut all = Vec::new();
        for &n_ctx in &self.n_ctx {
            for &n_batch in &self.n_batch {
                for &n_ubatch in &self.n_ubatch {
                    for &n_threads in &self.n_threads {
                        for &flash_attn in &self.flash_attn {
                            for &type_k in &self.type_k {
                                for &type_v in &self.type_v {
                                    all.push(ContextParams {
                                        n_ctx,
                                        n_batch,
                                        n_ubatch,
                                        n_threads,
                                        flash_attn,
                                        type_k,
                                        type_v,
                                        n_seq_max: 1,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        all
    }

    /// The names of the parameters given more than one value: the columns a sweep table shows.
    pub fn varying(&self) -> Vec<&'static str> {
        let lists: [(&'static str, usize); 17] = [
            ("model", self.models.len()),
            ("backend", self.backends.len()),
            ("n_gpu_layers", self.n_gpu_layers.len()),
            ("split_mode", self.split_mode.len()),
            ("main_gpu", self.main_gpu.len()),
            ("use_mmap", self.use_mmap.len()),
            ("devices", self.devices.len()),
            ("tensor_split", self.tensor_split.len()),
            ("n_ctx", self.n_ctx.len()),
            ("n_batch", self.n_batch.len()),
            ("n_ubatch", self.n_ubatch.len()),
            ("n_threads", self.n_threads.len()),
            ("flash_attn", self.flash_attn.len()),
            ("type_k", self.type_k.len()),
            ("type_v", self.type_v.len()),
            ("test", self.tests.len()),
            ("", 0),
        ];
        lists.iter().filter(|(name, n)| !name.is_empty() && *n > 1).map(|(name, _)| *name).collect()
    }
}

/// One row to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Position in the plan, from 0.
    pub index: usize,
    /// Index into [`SweepSpec::models`].
    pub model: usize,
    /// Index into [`SweepSpec::backends`].
    pub backend: usize,
    pub load: LoadParams,
    pub context: ContextParams,
    /// Index into [`SweepSpec::tests`].
    pub test: usize,
}

impl Instance {
    /// Instances with the same key share a loaded model.
    pub fn load_key(&self) -> (usize, usize, &LoadParams) {
        (self.model, self.backend, &self.load)
    }

    /// Instances with the same key share a context.
    pub fn context_key(&self) -> (usize, usize, &LoadParams, &ContextParams) {
        (self.model, self.backend, &self.load, &self.context)
    }
}

/// A sweep expanded into ordered instances.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub spec: SweepSpec,
    pub instances: Vec<Instance>,
}

/// The most instances one invocation may plan; beyond it a typo (a range meant to be a list) is far likelier
/// than a real wish.
pub const MAX_INSTANCES: usize = 100_000;

impl Plan {
    pub fn new(spec: SweepSpec) -> Result<Plan, BenchError> {
        let empty = [
            ("-m", spec.models.is_empty()),
            ("-b", spec.backends.is_empty()),
            ("--n-gpu-layers", spec.n_gpu_layers.is_empty()),
            ("--split-mode", spec.split_mode.is_empty()),
            ("--main-gpu", spec.main_gpu.is_empty()),
            ("--mmap", spec.use_mmap.is_empty()),
            ("--device", spec.devices.is_empty()),
            ("--tensor-split", spec.tensor_split.is_empty()),
            ("--ctx-size", spec.n_ctx.is_empty()),
            ("--batch-size", spec.n_batch.is_empty()),
            ("--ubatch-size", spec.n_ubatch.is_empty()),
            ("--threads", spec.n_threads.is_empty()),
            ("--flash-attn", spec.flash_attn.is_empty()),
            ("--cache-type-k", spec.type_k.is_empty()),
            ("--cache-type-v", spec.type_v.is_empty()),
            ("tests", spec.tests.is_empty()),
        ];
        if let Some((flag, _)) = empty.iter().find(|(_, is_empty)| *is_empty) {
            return Err(BenchError::InvalidConfig(format!("{flag}: no value to run")));
        }
        let loads = spec.load_params();
        let contexts = spec.context_params();
        let total = spec
            .models
            .len()
            .saturating_mul(spec.backends.len())
            .saturating_mul(loads.len())
            .saturating_mul(contexts.len())
            .saturating_mul(spec.tests.len());
        if total > MAX_INSTANCES {
            return Err(BenchError::InvalidConfig(format!(
                "the parameter lists combine into {total} runs (at most {MAX_INSTANCES}); shorten a list or a range"
            )));
        }
        let mut instances = Vec::with_capacity(total);
        for model in 0..spec.models.len() {
            for backend in 0..spec.backends.len() {
                for load in &loads {
                    for context in &contexts {
                        for test in 0..spec.tests.len() {
                            instances.push(Instance {
                                index: instances.len(),
                                model,
                                backend,
                                load: load.clone(),
                                context: sized_for_test(context, &spec.tests[test]),
                                test,
                            });
                        }
                    }
                }
            }
        }
        Ok(Plan { spec, instances })
    }

    /// Model loads the plan needs: one per distinct (model, backend, load parameters).
    pub fn load_count(&self) -> usize {
        count_changes(&self.instances, |i| i.load_key())
    }

    /// Contexts the plan creates: one per distinct (model, backend, load, context parameters).
    pub fn context_count(&self) -> usize {
        count_changes(&self.instances, |i| i.context_key())
    }

    pub fn test(&self, instance: &Instance) -> &TestCase {
        &self.spec.tests[instance.test]
    }
}

/// How often `key` changes along `instances` (plus one for the first): with the plan's ordering, each
/// distinct key is one contiguous run, so this is the number of loads or contexts.
fn count_changes<'a, K: PartialEq>(instances: &'a [Instance], key: impl Fn(&'a Instance) -> K) -> usize {
    let mut count = 0;
    let mut previous: Option<K> = None;
    for instance in instances {
        let current = key(instance);
        if previous.as_ref() != Some(&current) {
            count += 1;
        }
        previous = Some(current);
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use velollm_core::{BenchmarkConfig, TokenTest};

    fn tests(n: usize) -> Vec<TestCase> {
        (0..n)
            .map(|i| TestCase::Tokens { test: TokenTest::single(64 * (i as u32 + 1), 0, 0), repetitions: 2 })
            .collect()
    }

    #[test]
    fn without_a_context_size_each_test_gets_llama_bench_s() {
        let mut spec = SweepSpec::single("m", "llamacpp", 2, tests(2));
        spec.tests.push(TestCase::Tokens { test: TokenTest::single(16, 32, 100), repetitions: 2 });
        spec.tests.push(TestCase::Text(BenchmarkConfig {
            name: "custom".into(),
            model: "m".into(),
            prompt: "Hi".into(),
            max_tokens: 8,
            iterations: 1,
        }));
        spec.n_ctx = vec![CTX_PER_TEST];
        let plan = Plan::new(spec.clone()).unwrap();
        let sizes: Vec<u32> = plan.instances.iter().map(|i| i.context.n_ctx).collect();
        assert_eq!(sizes, [64, 128, 148, 2048], "n_prompt + n_gen + n_depth; text tests the default");
        assert_eq!(plan.context_count(), 4, "a context per size");
        // An explicit size is every test's.
        spec.n_ctx = vec![512];
        let plan = Plan::new(spec).unwrap();
        assert!(plan.instances.iter().all(|i| i.context.n_ctx == 512));
        assert_eq!(plan.context_count(), 1);
    }

    #[test]
    fn orders_so_each_load_and_context_is_one_run() {
        let mut spec = SweepSpec::single("m", "llamacpp", 2, tests(2));
        spec.n_gpu_layers = vec![GpuLayers::Count(0), GpuLayers::All];
        spec.n_threads = vec![1, 2];
        spec.n_ubatch = vec![128, 512];
        spec.models = vec!["a".into(), "b".into()];
        let plan = Plan::new(spec).unwrap();
        // 2 models × 2 ngl × (2 ubatch × 2 threads) × 2 tests.
        assert_eq!(plan.instances.len(), 32);
        assert_eq!(plan.load_count(), 4, "one load per model and -ngl value");
        assert_eq!(plan.context_count(), 16, "one context per load and context combination");
        // Model varies slowest, tests fastest.
        assert!(plan.instances[..16].iter().all(|i| i.model == 0));
        assert_eq!((plan.instances[0].test, plan.instances[1].test), (0, 1));
        assert_eq!(plan.instances[0].load.n_gpu_layers, GpuLayers::Count(0));
        assert_eq!(plan.instances[8].load.n_gpu_layers, GpuLayers::All);
        // Within a load group, ubatch (listed before threads) varies slower than threads.
        let group: Vec<(u32, u32)> =
            plan.instances[..8].iter().step_by(2).map(|i| (i.context.n_ubatch, i.context.n_threads)).collect();
        assert_eq!(group, [(128, 1), (128, 2), (512, 1), (512, 2)]);
        assert!(plan.instances.iter().enumerate().all(|(n, i)| i.index == n));
    }

    #[test]
    fn varying_parameters_are_the_table_columns() {
        let mut spec = SweepSpec::single("m", "llamacpp", 2, tests(1));
        assert!(spec.varying().is_empty());
        spec.n_threads = vec![1, 2];
        spec.flash_attn = vec![FlashAttention::On, FlashAttention::Off];
        assert_eq!(spec.varying(), ["n_threads", "flash_attn"]);
    }

    #[test]
    fn empty_lists_and_huge_products_are_refused() {
        let mut spec = SweepSpec::single("m", "llamacpp", 2, tests(1));
        spec.n_batch.clear();
        assert!(Plan::new(spec).unwrap_err().to_string().contains("--batch-size: no value to run"));
        let mut spec = SweepSpec::single("m", "llamacpp", 2, tests(1));
        spec.n_threads = (1..=400).collect();
        spec.n_ubatch = (1..=400).collect();
        let err = Plan::new(spec).unwrap_err().to_string();
        assert!(err.contains("combine into 160000 runs"), "{err}");
    }
}
