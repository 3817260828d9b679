//! The page's header and its tiles "at a glance": how many rows, the fastest decode and prompt rates, the lowest
//! TTFT and the first failure, each with the row it came from.

use serde_json::Value;
use velollm_results::{Entry, Metric, Run, Status};

use super::{file_label, Dims, Item};

/// What the header says: the rows, the models under their one name, the machines, and each file.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub rows: usize,
    pub models: Vec<String>,
    /// The machines of velollm's rows, in a few words (llama-bench rows record none here).
    pub machines: Vec<String>,
    pub files: Vec<FileLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileLine {
    /// `base`, `new`, or none when the page has one file.
    pub role: Option<&'static str>,
    pub path: String,
    pub label: String,
    pub tools: &'static str,
    pub rows: usize,
}

pub fn header(items: &[Item], runs: &[Run]) -> Header {
    let mut models: Vec<String> = Vec::new();
    let mut machines: Vec<String> = Vec::new();
    for item in items {
        if !models.contains(&item.model) {
            models.push(item.model.clone());
        }
        if let Some(machine) = machine(item.entry).filter(|m| !machines.contains(m)) {
            machines.push(machine);
        }
    }
    let files = runs
        .iter()
        .enumerate()
        .map(|(i, run)| FileLine {
            role: match (runs.len(), i) {
                (1, _) => None,
                (_, 0) => Some("base"),
                _ => Some("new"),
            },
            path: run.path.display().to_string(),
            label: file_label(run),
            tools: run.tools(),
            rows: run.entries.len(),
        })
        .collect();
    Header { rows: items.len(), models, machines, files }
}

/// The machine a row ran on, in a few words (velollm rows only).
fn machine(e: &Entry) -> Option<String> {
    let env = e.source.get("environment")?;
    let cpu = env.get("cpu_model").and_then(Value::as_str)?;
    let cores =
        env.get("cpu_physical_cores").and_then(Value::as_u64).map(|c| format!(", {c} cores")).unwrap_or_default();
    let ram = env
        .get("ram_bytes")
        .and_then(Value::as_u64)
        .map(|b| format!(", {:.0} GiB", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_default();
    Some(format!("{cpu}{cores}{ram}"))
}

/// One tile: what it shows, its value, and the row it came from in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub what: &'static str,
    pub value: TileValue,
    pub unit: &'static str,
    pub how: String,
    /// Drawn as a warning (failures).
    pub bad: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TileValue {
    Count(usize),
    Measured(f64),
}

/// The tiles, in page order: rows; the fastest decode (text tests and `tg`); the fastest prompt processing (`pp`,
/// else the text tests' prompt rate); the lowest TTFT; the failures with the first one's error. A tile whose
/// metric no row measured is left out.
pub fn tiles(items: &[Item], runs: &[Run]) -> Vec<Tile> {
    let count = |s: Status| items.iter().filter(|i| i.entry.status == s).count();
    let (ok, incomplete, failed) = (count(Status::Ok), count(Status::Incomplete), count(Status::Failed));
    let mut how = format!("{ok} ok");
    if incomplete > 0 {
        how.push_str(&format!(" · {incomplete} incomplete"));
    }
    if failed > 0 {
        how.push_str(&format!(" · {failed} failed"));
    }
    let mut tiles = vec![Tile { what: "Rows", value: TileValue::Count(items.len()), unit: "", how, bad: false }];
    let all: Vec<&Item> = items.iter().collect();
    let dims = Dims::of(&all, runs, None);
    let describe = |i: &Item| {
        let label = dims.label(i, runs);
        if label.is_empty() {
            format!("{} · {}", i.entry.test.name, i.entry.backend)
        } else {
            format!("{} · {label}", i.entry.test.name)
        }
    };
    let best = |filter: &dyn Fn(&Item) -> bool, metric: Metric, higher: bool| {
        items
            .iter()
            .filter(|i| filter(i) && i.entry.status != Status::Failed)
            .filter_map(|i| i.mean_sd(metric).map(|m| (i, m.0)))
            .max_by(|a, b| if higher { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) })
    };
    let measured = |what, (i, v): (&Item, f64), unit| Tile {
        what,
        value: TileValue::Measured(v),
        unit,
        how: describe(i),
        bad: false,
    };
    if let Some(best) =
        best(&|i| i.entry.test.kind == "text" || i.entry.test.kind == "tg", Metric::TokensPerSecond, true)
    {
        tiles.push(measured("Fastest decode", best, " tok/s"));
    }
    if let Some(best) = best(&|i| i.entry.test.kind == "pp", Metric::TokensPerSecond, true) {
        tiles.push(measured("Fastest prompt processing", best, " t/s"));
    } else if let Some(best) = best(&|i| i.entry.test.kind == "text", Metric::PromptTokensPerSecond, true) {
        tiles.push(measured("Fastest prompt evaluation", best, " tok/s"));
    }
    if let Some(best) = best(&|i| i.entry.test.kind == "text", Metric::TimeToFirstTokenMs, false) {
        tiles.push(measured("Lowest time to first token", best, " ms"));
    }
    if failed > 0 {
        let first = items.iter().find(|i| i.entry.status == Status::Failed).expect("counted above");
        tiles.push(Tile {
            what: "Failed",
            value: TileValue::Count(failed),
            unit: "",
            how: format!(
                "first: {} — {}",
                describe(first),
                clip(first.entry.error.as_deref().unwrap_or("no error recorded"), 90)
            ),
            bad: true,
        });
    }
    tiles
}

/// At most `max` characters, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>().trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::items;
    use crate::view::tests::llama_bench_beside_velollm;
    use velollm_fixtures::{text_samples_at, token_samples_at, Row};
    use velollm_results::read_str;

    #[test]
    fn the_tiles_name_the_best_rows_and_the_first_failure() {
        let rows = [
            Row::text("short", "Hi", 20, text_samples_at(&[50.0, 52.0], 20, 30.0)).threads(1).to_json(),
            Row::text("short", "Hi", 20, text_samples_at(&[70.0, 72.0], 20, 20.0)).threads(2).to_json(),
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0, 91.0])).threads(2).incomplete("stopped").to_json(),
            Row::tokens(64, 0, 0, vec![]).threads(2).failed("out of memory").to_json(),
        ];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        let tiles = tiles(&items(&runs), &runs);
        let whats: Vec<&str> = tiles.iter().map(|t| t.what).collect();
        // No pp row succeeded: the prompt tile is the text tests' prompt evaluation.
        assert_eq!(
            whats,
            ["Rows", "Fastest decode", "Fastest prompt evaluation", "Lowest time to first token", "Failed"]
        );
        assert_eq!((tiles[0].value, tiles[0].how.as_str()), (TileValue::Count(4), "2 ok · 1 incomplete · 1 failed"));
        // The incomplete tg16 row counts: its rate was measured.
        let TileValue::Measured(decode) = tiles[1].value else { panic!("a rate") };
        assert!((decode - 90.5).abs() < 1e-6, "{decode}");
        assert_eq!(tiles[1].how, "tg16 · threads 2");
        assert_eq!(tiles[3].how, "short · threads 2", "the lower TTFT");
        assert_eq!((tiles[4].value, tiles[4].bad), (TileValue::Count(1), true));
        assert_eq!(tiles[4].how, "first: pp64 · threads 2 — out of memory");
    }

    #[test]
    fn the_header_lists_one_model_for_one_file_measured_by_two_tools() {
        let runs = llama_bench_beside_velollm("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let header = header(&items(&runs), &runs);
        assert_eq!(header.rows, 6);
        assert_eq!(header.models, ["SmolLM2 135M Instruct"]);
        let roles: Vec<Option<&str>> = header.files.iter().map(|f| f.role).collect();
        assert_eq!(roles, [Some("base"), Some("new")]);
        assert_eq!((header.files[1].label.as_str(), header.files[1].rows), ("velollm.json", 3));
    }
}
