//! `--interleave`: the repetitions of every combination of a plan run round-robin, one repetition of each
//! combination per round, in plan order and in reverse order every other round, so that a slow phase of the machine (a busy neighbour, thermal
//! throttling) falls on every combination alike, and the rows of the run pair by repetition index.
//!
//! Every model of the plan (one per distinct model, backend and load parameters) is loaded up front and kept
//! loaded side by side ([`check_interleave`] refuses a plan whose models would not fit in memory). A loaded
//! model with a single context keeps it for the whole run; one whose combinations need several contexts
//! (a `--ctx-size` or `--threads` sweep) creates each context again in every round, and the warm-up runs again
//! on every new context (a fresh context's first request is not a warm one). A combination whose rule says
//! stop (its count, `-r auto`'s policy, an error) is done: its row is written at once, and later rounds skip
//! it. Ctrl-C ends the run after the current repetition with every combination's finished repetitions kept.

use std::ops::Range;

use super::*;

/// How a combination stands.
struct Combination {
    /// Its rows' base, once its context was created (a combination without one is done: its row is written).
    base: Option<RowBase>,
    repeating: Option<Repeating>,
    /// Its warm-up ran on the current context.
    warmed: bool,
    done: bool,
    interleaved: Option<Interleaved>,
}

/// A loaded model and the contexts its combinations need (ranges of plan instances).
struct Slot<'m> {
    contexts: Vec<Range<usize>>,
    sessions: Sessions<'m>,
}

enum Sessions<'m> {
    /// One context for the whole run.
    Kept(Box<dyn Session + 'm>),
    /// Several: each created again when its turn comes.
    Switched(&'m mut dyn LoadedModel),
}

/// Why a plan cannot be interleaved, if it cannot: the models it keeps loaded at once (their file sizes, one per
/// distinct model, backend and load parameters) against the memory available. A single load always runs.
pub(crate) fn interleave_memory_error(model_bytes: &[u64], available_bytes: Option<u64>) -> Option<String> {
    let available = available_bytes?;
    let needed: u64 = model_bytes.iter().sum();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    (model_bytes.len() > 1 && needed > available).then(|| {
        format!(
            "--interleave keeps {} models loaded at once ({:.1} GiB of model files) but only {:.1} GiB of memory is \
             available; interleave fewer models or load parameters, or run without --interleave",
            model_bytes.len(),
            gib(needed),
            gib(available)
        )
    })
}

/// Checks, before anything loads, that `plan` can be interleaved: its models fit in memory side by side, and
/// a server backend serves a single model and set of options (a server swaps models itself, so its
/// combinations would reload in every round).
pub(crate) fn check_interleave(
    plan: &Plan,
    server_backends: &[usize],
    file_bytes: impl Fn(usize) -> Option<u64>,
) -> Result<(), BenchError> {
    for &backend in server_backends {
        let mut on_server = plan.instances.iter().filter(|i| i.backend == backend);
        if let Some(first) = on_server.next() {
            if on_server.any(|i| i.model != first.model || i.load != first.load || i.context != first.context) {
                return Err(BenchError::InvalidConfig(format!(
                    "--interleave: {} serves one model and set of options at a time, and this plan gives it \
                     several (it would reload them in every round); interleave in-process backends, or give the \
                     server one model and one value of each parameter",
                    plan.spec.backends[backend]
                )));
            }
        }
    }
    let mut sizes = Vec::new();
    for range in load_groups(&plan.instances) {
        let first = &plan.instances[range.start];
        if server_backends.contains(&first.backend) {
            continue;
        }
        sizes.extend(file_bytes(first.model));
    }
    let available = velollm_hw::memory::detect_memory().available_bytes;
    match interleave_memory_error(&sizes, available) {
        Some(error) => Err(BenchError::InvalidConfig(error)),
        None => Ok(()),
    }
}

/// The plan's instances in runs sharing model, backend and load parameters (one loaded model each).
fn load_groups(instances: &[Instance]) -> Vec<Range<usize>> {
    runs(instances, 0..instances.len(), |a, b| a.model == b.model && a.backend == b.backend && a.load == b.load)
}

/// `range` cut into runs of instances for which `same` holds with the run's first.
fn runs(instances: &[Instance], range: Range<usize>, same: impl Fn(&Instance, &Instance) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let end = start + instances[start..range.end].iter().take_while(|i| same(&instances[start], i)).count();
        out.push(start..end);
        start = end;
    }
    out
}

impl PlanRunner<'_> {
    /// Runs the plan interleaved; `Ok(true)` when interrupted.
    pub(super) fn run_interleaved(&mut self) -> Result<bool, BenchError> {
        let plan = self.plan;
        let instances = &plan.instances;
        let mut combinations: Vec<Combination> = (0..instances.len())
            .map(|_| Combination { base: None, repeating: None, warmed: false, done: false, interleaved: None })
            .collect();

        // Every backend, and every model loaded, before any repetition.
        let mut groups: Vec<OpenGroup> = Vec::new();
        let mut loaded: Vec<(Range<usize>, LoadedGroup)> = Vec::new();
        for group in runs(instances, 0..instances.len(), |a, b| a.model == b.model && a.backend == b.backend) {
            let Some(open) = self.open_group(&instances[group.clone()])? else {
                group.clone().for_each(|i| combinations[i].done = true);
                continue;
            };
            for range in runs(instances, group.clone(), |a, b| a.load == b.load) {
                match self.load(&open, &instances[range.clone()])? {
                    Loading::Loaded(group) => loaded.push((range, *group)),
                    Loading::Failed => range.for_each(|i| combinations[i].done = true),
                    Loading::Interrupted => return Ok(true),
                }
            }
            groups.push(open);
        }

        // Contexts: created once to check that every test fits; kept when a model needs only one.
        let mut slots: Vec<Slot<'_>> = Vec::new();
        for (range, group) in loaded.iter_mut() {
            let contexts = runs(instances, range.clone(), |a, b| a.context == b.context);
            if self.cancelled() {
                return Ok(true);
            }
            if let [context] = contexts.as_slice() {
                let LoadedGroup { model, base, engine, effective_load } = group;
                let model_load_ms = model.load_ms();
                match model.new_context(&instances[context.start].context) {
                    Ok(mut session) => {
                        let parts = (&*base, &*engine, &*effective_load, model_load_ms);
                        self.first_context(session.as_mut(), parts, context.clone(), &mut combinations)?;
                        slots.push(Slot { contexts, sessions: Sessions::Kept(session) });
                    }
                    Err(BackendError::Cancelled) => return Ok(true),
                    Err(e) => {
                        self.fail_all(&instances[context.clone()], base, &e.to_string())?;
                        context.clone().for_each(|i| combinations[i].done = true);
                    }
                }
                continue;
            }
            let model_load_ms = group.model.load_ms();
            for context in &contexts {
                if self.cancelled() {
                    return Ok(true);
                }
                match group.model.new_context(&instances[context.start].context) {
                    Ok(mut session) => {
                        let parts = (&group.base, &group.engine, &group.effective_load, model_load_ms);
                        self.first_context(session.as_mut(), parts, context.clone(), &mut combinations)?;
                    }
                    Err(BackendError::Cancelled) => return Ok(true),
                    Err(e) => {
                        self.fail_all(&instances[context.clone()], &group.base, &e.to_string())?;
                        context.clone().for_each(|i| combinations[i].done = true);
                    }
                }
            }
            slots.push(Slot { contexts, sessions: Sessions::Switched(group.model.as_mut()) });
        }

        // The combinations that take part, and their place in each round.
        let run = format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"), std::process::id());
        let live: Vec<usize> = (0..instances.len()).filter(|&i| !combinations[i].done).collect();
        for (slot, &i) in live.iter().enumerate() {
            combinations[i].interleaved =
                Some(Interleaved { run: run.clone(), combinations: live.len() as u32, slot: slot as u32 });
        }

        let mut round = 0u32;
        while combinations.iter().any(|c| !c.done) {
            round += 1;
            // Every other round runs the combinations in reverse order, so a steady drift of the machine (it
            // warming up, a neighbour ramping up) falls on every combination alike instead of always favouring
            // the first of a round.
            let reverse = round.is_multiple_of(2);
            let slot_order: Vec<usize> =
                if reverse { (0..slots.len()).rev().collect() } else { (0..slots.len()).collect() };
            for slot_index in slot_order {
                let slot = &mut slots[slot_index];
                let mut contexts = slot.contexts.clone();
                if reverse {
                    contexts.reverse();
                }
                for context in contexts {
                    let mut active: Vec<usize> = context.clone().filter(|&i| !combinations[i].done).collect();
                    if reverse {
                        active.reverse();
                    }
                    if active.is_empty() {
                        continue;
                    }
                    if self.cancelled() {
                        return Ok(self.interrupt_all(&mut combinations));
                    }
                    let mut fresh;
                    let (session, new_context): (&mut dyn Session, bool) = match &mut slot.sessions {
                        Sessions::Kept(session) => (session.as_mut(), false),
                        Sessions::Switched(model) => match model.new_context(&instances[context.start].context) {
                            Ok(session) => {
                                self.contexts += 1;
                                fresh = session;
                                (fresh.as_mut(), true)
                            }
                            Err(BackendError::Cancelled) => return Ok(self.interrupt_all(&mut combinations)),
                            Err(e) => {
                                let error = format!("round {round}: cannot create the context again: {e}");
                                for i in active {
                                    self.end_combination(
                                        None,
                                        &mut combinations[i],
                                        i,
                                        StopRule::Error,
                                        Some(error.clone()),
                                    );
                                }
                                continue;
                            }
                        },
                    };
                    if new_context {
                        active.iter().for_each(|&i| combinations[i].warmed = false);
                    }
                    for i in active {
                        if self.cancelled() {
                            return Ok(self.interrupt_all(&mut combinations));
                        }
                        if self.interleaved_step(session, &mut combinations[i], i, round) {
                            return Ok(self.interrupt_all(&mut combinations));
                        }
                    }
                }
            }
        }
        drop(slots);
        drop(loaded);
        drop(groups);
        Ok(false)
    }

    /// A context's first creation: the base of its rows, and which of its tests fit (the others are failed
    /// rows now).
    fn first_context(
        &mut self,
        session: &mut dyn Session,
        (base, engine, effective_load, model_load_ms): (&RowBase, &EngineInfo, &EffectiveLoad, f64),
        context: Range<usize>,
        combinations: &mut [Combination],
    ) -> Result<(), BenchError> {
        self.contexts += 1;
        let base = self.context_base(session, base, engine, effective_load, model_load_ms);
        let fits = self.check_fit(session, &base, &self.plan.instances[context.clone()])?;
        for (i, fits) in context.zip(fits) {
            combinations[i].base = Some(base.clone());
            combinations[i].done |= !fits;
        }
        Ok(())
    }

    /// One round's turn of a combination: its warm-up when due, then one timed repetition. `true` when the
    /// run was interrupted.
    fn interleaved_step(&mut self, session: &mut dyn Session, c: &mut Combination, i: usize, round: u32) -> bool {
        let plan = self.plan;
        let instance = &plan.instances[i];
        let test = plan.test(instance);
        let Some(base) = c.base.clone() else {
            c.done = true;
            return false;
        };
        let config = test.row_config(&plan.spec.models[instance.model]);
        let at = self.position(instance, &base, &config);
        if !c.warmed {
            if c.repeating.is_none() {
                self.observer.test_started(&at, self.options.warmup_iterations);
                self.busy_machine = busy_machine_warning(instance.context.n_threads);
            }
            match self.warm_up(session, test, &at) {
                Ok(()) => c.warmed = true,
                Err((StopRule::Interrupted, _)) => return true,
                Err((rule, error)) => {
                    let error = if c.repeating.is_some() { format!("round {round}: {error}") } else { error };
                    self.end_combination(Some(session), c, i, rule, Some(error));
                    return false;
                }
            }
        }
        if c.repeating.is_none() {
            let interleaved = c.interleaved.clone();
            c.repeating = Some(self.start_repeating(&base, instance, interleaved));
        }
        let Some(repeating) = c.repeating.as_mut() else { return false };
        match self.timed_step(session, test, &at, repeating) {
            Step::Continue => false,
            Step::Stop(StopRule::Interrupted, _) => true,
            Step::Stop(rule, error) => {
                self.end_combination(Some(session), c, i, rule, error);
                false
            }
        }
    }

    /// A combination is done: its row (finished, incomplete with the error, or failed when nothing was kept).
    fn end_combination(
        &mut self,
        session: Option<&mut dyn Session>,
        c: &mut Combination,
        i: usize,
        rule: StopRule,
        error: Option<String>,
    ) {
        c.done = true;
        let instance = &self.plan.instances[i];
        let test = self.plan.test(instance);
        match c.repeating.take() {
            Some(repeating) => {
                self.finish(session, test, repeating, rule, error);
            }
            None => {
                let Some(base) = c.base.clone() else { return };
                let mut row = self.row(&base, instance, Vec::new(), Vec::new(), RowStatus::Failed, error, None, None);
                row.interleaved = c.interleaved.clone();
                self.emit(row);
            }
        }
    }

    /// Ctrl-C: every combination's finished repetitions become an incomplete row. Returns `true`.
    fn interrupt_all(&mut self, combinations: &mut [Combination]) -> bool {
        let plan = self.plan;
        for (i, c) in combinations.iter_mut().enumerate().filter(|(_, c)| !c.done) {
            c.done = true;
            if let Some(repeating) = c.repeating.take() {
                let test = plan.test(&plan.instances[i]);
                self.finish(None, test, repeating, StopRule::Interrupted, Some("interrupted".into()));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(threads: Vec<u32>) -> Plan {
        let test = TestCase::Tokens { test: TokenTest::single(0, 8, 0), repetitions: 2 };
        Plan::new(crate::plan::SweepSpec {
            n_threads: threads,
            ..crate::plan::SweepSpec::single("m", "ollama", 1, vec![test])
        })
        .unwrap()
    }

    #[test]
    fn a_server_is_interleaved_only_with_one_model_and_set_of_options() {
        assert!(check_interleave(&plan(vec![1]), &[0], |_| None).is_ok());
        let error = check_interleave(&plan(vec![1, 2]), &[0], |_| None).unwrap_err().to_string();
        assert!(error.contains("--interleave: ollama serves one model and set of options at a time"), "{error}");
        // The same plan on an in-process backend: one model, kept loaded, always fits.
        assert!(check_interleave(&plan(vec![1, 2]), &[], |_| Some(u64::MAX / 4)).is_ok());
    }

    #[test]
    fn memory_check_counts_every_model_kept_loaded() {
        let gib = 1u64 << 30;
        assert_eq!(interleave_memory_error(&[3 * gib], Some(gib)), None, "a single load always runs");
        assert_eq!(interleave_memory_error(&[gib, gib], None), None, "unknown memory is not guessed");
        assert_eq!(interleave_memory_error(&[gib, gib], Some(3 * gib)), None);
        let error = interleave_memory_error(&[2 * gib, 2 * gib], Some(3 * gib)).unwrap();
        assert!(error.starts_with("--interleave keeps 2 models loaded at once (4.0 GiB"), "{error}");
        assert!(error.contains("only 3.0 GiB"), "{error}");
    }
}
