//! The two sides of a comparison chosen by what their rows ran: `--base 'n_threads=1' --new 'n_threads=2'`
//! compares the 1-thread rows of one file (typically an interleaved sweep) with its 2-thread rows.
//!
//! A selector is a comma list of `name=value` terms, every one of which a row must satisfy: a parameter the
//! rows record (`n_threads`, `n_gpu_layers`, `flash_attn`, …, values in the spelling compare uses: `all`,
//! `on`/`off`/`auto`, `true`/`false`), `backend`, `model` (its label or file name) or `test` (`tg128`, or a
//! text benchmark's name).

use serde_json::Value;

use velollm_results::{normalise, Entry, Run, Tool};

/// Rows to keep: every `name=value` must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// As written (trimmed), for labels.
    pub text: String,
    pub terms: Vec<(String, String)>,
}

impl Selector {
    /// Parses `name=value[,name=value…]`.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((name, value)) = term.split_once('=') else {
                return Err(format!("'{term}' is not name=value"));
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name.is_empty() || value.is_empty() {
                return Err(format!("'{term}' is not name=value"));
            }
            let value = match name.as_str() {
                "backend" | "test" => value.to_ascii_lowercase(),
                "model" => value.to_string(),
                _ => normalise(Tool::Velollm, &name, &Value::String(value.to_string())).unwrap_or_default(),
            };
            terms.push((name, value));
        }
        if terms.is_empty() {
            return Err("an empty selection (name=value, e.g. n_threads=2)".into());
        }
        Ok(Selector { text: text.trim().to_string(), terms })
    }

    /// The names the selector uses (left out of the matching: the sides differ in them on purpose).
    pub fn names(&self) -> Vec<String> {
        self.terms.iter().map(|(n, _)| n.clone()).collect()
    }

    fn value<'a>(entry: &'a Entry, name: &str) -> Option<&'a str> {
        match name {
            "backend" => Some(&entry.backend),
            "test" => Some(&entry.test.name),
            _ => entry.parameters.get(name).map(String::as_str),
        }
    }

    pub fn matches(&self, entry: &Entry) -> bool {
        self.terms.iter().all(|(name, value)| match name.as_str() {
            "model" => entry.model.label == *value || entry.model.file_name == *value,
            "test" => entry.test.name.eq_ignore_ascii_case(value),
            _ => Self::value(entry, name) == Some(value.as_str()),
        })
    }
}

/// What the two sides differ in on purpose, left out of the matching: the names both selections use with
/// different values (`--base n_threads=1 --new n_threads=2`: `n_threads`). A name only one side selects on
/// stays matched (`--base n_threads=1` alone compares the base's 1-thread rows with the new file's 1-thread rows).
pub fn differing_names(base: Option<&Selector>, new: Option<&Selector>) -> Vec<String> {
    let (Some(base), Some(new)) = (base, new) else { return Vec::new() };
    let mut names = Vec::new();
    for (name, value) in &base.terms {
        let differs = new.terms.iter().any(|(n, v)| n == name && v != value);
        if differs && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The rows of `run` that `selector` keeps, as a run of their own (rows keep their numbers in the file);
/// an error when a name is not something the rows record, or no row is kept (the message lists the values
/// the file has).
pub fn select(run: &Run, selector: &Selector) -> Result<Run, String> {
    for (name, _) in &selector.terms {
        let known = matches!(name.as_str(), "backend" | "model" | "test")
            || run.entries.iter().any(|e| e.parameters.contains_key(name));
        if !known {
            let mut names: Vec<&str> =
                run.entries.iter().flat_map(|e| e.parameters.keys().map(String::as_str)).collect();
            names.sort();
            names.dedup();
            return Err(format!(
                "'{name}' is not recorded by the rows of {} (they record backend, model, test, {})",
                run.path.display(),
                names.join(", ")
            ));
        }
    }
    let entries: Vec<Entry> = run.entries.iter().filter(|e| selector.matches(e)).cloned().collect();
    if entries.is_empty() {
        let seen: Vec<String> = selector
            .terms
            .iter()
            .map(|(name, _)| {
                let mut values: Vec<String> = run
                    .entries
                    .iter()
                    .filter_map(|e| match name.as_str() {
                        "model" => Some(e.model.label.clone()),
                        _ => Selector::value(e, name).map(str::to_string),
                    })
                    .collect();
                values.sort();
                values.dedup();
                format!("{name}: {}", values.join(", "))
            })
            .collect();
        return Err(format!("'{}' selects no row of {} ({})", selector.text, run.path.display(), seen.join("; ")));
    }
    let selection = match &run.selection {
        Some(before) => format!("{before}, {}", selector.text),
        None => selector.text.clone(),
    };
    Ok(Run {
        path: run.path.clone(),
        layout: run.layout,
        selection: Some(selection),
        entries,
        warnings: run.warnings.clone(),
    })
}
