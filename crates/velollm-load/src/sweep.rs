//! `--sweep`: find the saturation point and the highest rate that still meets the SLO, the way GuideLLM's
//! sweep does: one request at a time (the unloaded latency and its throughput r₁), then flat out (every
//! request at once: the most the server carries, r_max), then `k` open-loop Poisson rates spread evenly
//! between them. docs/metrics.md ("Load runs") states the rule.

use velollm_core::{LoadRecord, LoadShape, SweepStep};

use crate::LoadOptions;

/// The sweep's state: which step comes next, given the records of the steps so far.
#[derive(Debug, Clone)]
pub struct Sweep {
    between: u32,
    records: Vec<(LoadShape, Option<f64>, f64)>,
}

impl Sweep {
    pub fn new(between: u32) -> Sweep {
        Sweep { between, records: Vec::new() }
    }

    /// The next step's shape and its label, or `None` when the sweep is done. Rates between come from the
    /// first two steps' request throughputs; a step that measured none ends the sweep.
    pub fn next(&self, options: &LoadOptions) -> Option<(LoadShape, SweepStep)> {
        let step = self.records.len() as u32 + 1;
        match self.records.len() {
            0 => Some((LoadShape::Closed { concurrency: 1 }, SweepStep { phase: "one_at_a_time".into(), step })),
            1 => Some((
                LoadShape::Open { rate: None, burstiness: options.burstiness },
                SweepStep { phase: "flat_out".into(), step },
            )),
            n => {
                let i = (n - 1) as u32;
                if i > self.between {
                    return None;
                }
                let (low, high) = self.bounds()?;
                let rate = low + (high - low) * f64::from(i) / f64::from(self.between + 1);
                Some((
                    LoadShape::Open { rate: Some(rate), burstiness: options.burstiness },
                    SweepStep { phase: "between".into(), step },
                ))
            }
        }
    }

    /// r₁ and r_max; when flat out is no faster than one at a time (a server that serves requests one by one),
    /// the rates between span [r_max / 2, r_max] instead, so the sweep still shows where latency grows.
    fn bounds(&self) -> Option<(f64, f64)> {
        let one = self.records.first()?.1?;
        let flat = self.records.get(1)?.1?;
        if flat > one {
            Some((one, flat))
        } else {
            Some((flat / 2.0, flat))
        }
    }

    /// Records a finished step (its shape, its request throughput, its SLO attainment).
    pub fn record(&mut self, shape: LoadShape, record: &LoadRecord) {
        self.records.push((shape, record.request_throughput, record.slo_attainment.unwrap_or(0.0)));
    }

    /// The highest offered rate whose SLO attainment reached `attainment`, with that step's request
    /// throughput: the one-at-a-time step counts at its measured throughput, flat out does not (it offers no
    /// rate). `None` when no step met it.
    pub fn highest_rate_meeting_slo(&self, attainment: f64) -> Option<f64> {
        self.records
            .iter()
            .filter(|(_, _, met)| *met >= attainment)
            .filter_map(|(shape, throughput, _)| match shape {
                LoadShape::Closed { .. } => *throughput,
                LoadShape::Open { rate, .. } => *rate,
            })
            .max_by(f64::total_cmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use velollm_core::{LoadProfile, LoadStop};

    fn record(throughput: f64, attainment: f64) -> LoadRecord {
        let profile = LoadProfile {
            shape: LoadShape::Closed { concurrency: 1 },
            stop: LoadStop::Requests(1),
            warmup_requests: 0,
            max_concurrency: 1,
            seed: 0,
        };
        let mut r = crate::summarize(&profile, Vec::new(), 0, None);
        r.request_throughput = Some(throughput);
        r.slo_attainment = Some(attainment);
        r
    }

    #[test]
    fn one_at_a_time_then_flat_out_then_rates_between() {
        let options = LoadOptions::default();
        let mut sweep = Sweep::new(3);
        let (first, step) = sweep.next(&options).unwrap();
        assert_eq!((first, step.phase.as_str()), (LoadShape::Closed { concurrency: 1 }, "one_at_a_time"));
        sweep.record(first, &record(2.0, 1.0));
        let (second, _) = sweep.next(&options).unwrap();
        assert_eq!(second, LoadShape::Open { rate: None, burstiness: 1.0 });
        sweep.record(second, &record(10.0, 0.2));
        let mut rates = Vec::new();
        while let Some((shape, step)) = sweep.next(&options) {
            let LoadShape::Open { rate: Some(rate), .. } = shape else { panic!("{shape:?}") };
            assert_eq!(step.phase, "between");
            rates.push(rate);
            // 4 and 6 meet the SLO, 8 does not.
            sweep.record(shape, &record(rate, if rate < 7.0 { 0.95 } else { 0.5 }));
        }
        assert_eq!(rates, [4.0, 6.0, 8.0], "three rates evenly between 2 and 10");
        assert_eq!(sweep.highest_rate_meeting_slo(0.9), Some(6.0));
        assert_eq!(sweep.highest_rate_meeting_slo(0.99), Some(2.0), "only one at a time met 99 %");
    }

    #[test]
    fn a_serial_server_gets_rates_below_its_flat_out_throughput() {
        let options = LoadOptions::default();
        let mut sweep = Sweep::new(1);
        sweep.record(LoadShape::Closed { concurrency: 1 }, &record(4.0, 1.0));
        sweep.record(LoadShape::Open { rate: None, burstiness: 1.0 }, &record(4.0, 0.0));
        let (shape, _) = sweep.next(&options).unwrap();
        assert_eq!(shape, LoadShape::Open { rate: Some(3.0), burstiness: 1.0 }, "between 2 and 4");
    }
}
