//! The base side of `velollm compare --baseline last|RUN|best`, taken from the history.
//!
//! - `last`: the latest run on the machine that has rows, other than the run the new rows came from (a
//!   run that holds every new row, the same JSON, is that run);
//! - `RUN`: that run's rows;
//! - `best`: for each new row, the fastest ok row the history holds on the machine for the same test, model,
//!   backend and parameters (the same matching `velollm compare` does), so a regression is measured against
//!   the best this configuration ever did here.

use serde_json::Value;
use velollm_results::Entry;

use crate::{History, HistoryError, RunFilter, RunId, StoredRow};

/// Which base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    Last,
    Run(RunId),
    Best,
}

impl Baseline {
    pub fn parse(text: &str) -> Option<Baseline> {
        match text {
            "last" => Some(Baseline::Last),
            "best" => Some(Baseline::Best),
            _ => text.parse().ok().filter(|id: &RunId| *id > 0).map(Baseline::Run),
        }
    }
}

/// The base rows, and what to call them (`history run 12`, `history best of 40 runs`).
pub struct BaseRows {
    pub label: String,
    pub rows: Vec<Value>,
}

/// Whether `stored` is one of the new rows itself: the history keeps each row exactly as it was written to the
/// results files, so the run that wrote the new rows holds equal JSON. (A timestamp alone is not enough: two
/// runs' rows can finish within the same second.)
fn is_one_of(stored: &Value, news: &[Entry]) -> bool {
    news.iter().any(|new| &new.source == stored)
}

impl History {
    /// The base rows for `baseline` against `news` (the new rows), on `machine` (an alias; `None`: any).
    pub fn baseline(
        &self,
        baseline: Baseline,
        news: &[Entry],
        machine: Option<&str>,
    ) -> Result<BaseRows, HistoryError> {
        match baseline {
            Baseline::Run(id) => {
                let rows = self.rows_of(id)?;
                if rows.is_empty() {
                    return Err(HistoryError::Invalid(format!("run {id} is not in the history, or has no rows")));
                }
                Ok(BaseRows { label: format!("history run {id}"), rows: rows.into_iter().map(|r| r.row).collect() })
            }
            Baseline::Last => {
                let filter = RunFilter { machine: machine.map(str::to_string), ..RunFilter::default() };
                for run in self.runs(&filter)?.iter().rev().filter(|r| r.rows > 0) {
                    let rows = self.rows_of(run.id)?;
                    let holds_every_new_row =
                        !news.is_empty() && news.iter().all(|new| rows.iter().any(|r| r.row == new.source));
                    if holds_every_new_row {
                        continue; // the run the new rows came from
                    }
                    return Ok(BaseRows {
                        label: format!("history run {} (the last{})", run.id, on(machine)),
                        rows: rows.into_iter().map(|r| r.row).collect(),
                    });
                }
                Err(HistoryError::Invalid(format!("the history holds no earlier run{} to compare with", on(machine))))
            }
            Baseline::Best => {
                let filter = RunFilter { machine: machine.map(str::to_string), ..RunFilter::default() };
                let stored: Vec<StoredRow> = self
                    .rows(&filter)?
                    .into_iter()
                    .filter(|r| r.status == "ok" && r.tokens_per_second.is_some())
                    .collect();
                let mut chosen: Vec<Value> = Vec::new();
                let mut runs = std::collections::BTreeSet::new();
                for new in news {
                    let mut best: Option<(&StoredRow, f64)> = None;
                    for row in &stored {
                        // The new rows themselves, when their run is in the history, are not their own base.
                        if is_one_of(&row.row, news) {
                            continue;
                        }
                        let Ok(entry) = crate::reader::entry_of_row(&row.row) else { continue };
                        if !velollm_compare::differences(&entry, new, &[]).is_empty() {
                            continue;
                        }
                        let rate = row.tokens_per_second.unwrap_or(f64::NAN);
                        let better = match best {
                            None => true,
                            Some((_, current)) => rate > current,
                        };
                        if better {
                            best = Some((row, rate));
                        }
                    }
                    if let Some((row, _)) = best {
                        runs.insert(row.run_id);
                        if !chosen.contains(&row.row) {
                            chosen.push(row.row.clone());
                        }
                    }
                }
                if chosen.is_empty() {
                    return Err(HistoryError::Invalid(format!(
                        "the history holds no ok row{} of the same test, model, backend and parameters as the new rows",
                        on(machine)
                    )));
                }
                Ok(BaseRows {
                    label: format!(
                        "history best (from {} run{}{})",
                        runs.len(),
                        if runs.len() == 1 { "" } else { "s" },
                        on(machine)
                    ),
                    rows: chosen,
                })
            }
        }
    }
}

fn on(machine: Option<&str>) -> String {
    machine.map(|m| format!(" on {m}")).unwrap_or_default()
}
