//! Pre-tokenization for byte-level BPE: splitting text into words before merges, as llama.cpp does per
//! `tokenizer.ggml.pre`.
//!
//! llama.cpp applies a list of regexes in turn; each one splits every piece produced so far into its matches
//! and the text between them (both kept). Its common regexes run as hand-written scanners over Unicode
//! classes, and these are written the same way here, so that edge cases (emoji, combining marks, runs of
//! whitespace) split exactly as llama.cpp splits them.

use super::unicode::{classify, CharClass};

/// A pre-tokenizer family, named by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// GPT-2's regex: contractions, ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`, `\s+(?!\S)`, `\s+`.
    Gpt2,
    /// Every number code point on its own, then GPT-2's regex (StarCoder, SmolLM, …).
    DigitsThenGpt2,
    /// Llama 3's regex with numbers in groups of up to `max_digits` (3 for Llama 3, 1 for Qwen2).
    Llama3 { max_digits: usize },
    /// llama.cpp's fallback for unknown names: punctuation runs, GPT-2's regex, number runs, digit triples.
    Default,
}

/// The `tokenizer.ggml.pre` names handled, for error messages.
pub(crate) const SUPPORTED_PRE: &str =
    "default, gpt2, smollm, starcoder, refact, command-r, codeshell, qwen2, llama3, llama-bpe, deepseek-r1-qwen";

impl PreTokenizer {
    /// The family llama.cpp uses for a `tokenizer.ggml.pre` name; `None` for names it treats specially that
    /// velollm does not implement.
    pub(crate) fn from_gguf_name(name: &str) -> Option<PreTokenizer> {
        Some(match name {
            "default" => PreTokenizer::Default,
            "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "trillion" => PreTokenizer::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
                PreTokenizer::DigitsThenGpt2
            }
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "hunyuan" => PreTokenizer::Llama3 { max_digits: 1 },
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "midm-2.0" | "lfm2" => {
                PreTokenizer::Llama3 { max_digits: 3 }
            }
            _ => return None,
        })
    }

    /// Splits `text` into words, as byte ranges of `text`.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let classes: Vec<CharClass> = chars.iter().map(|&(_, c)| classify(c)).collect();
        let input = Chars { chars: &chars, classes: &classes };
        let whole = vec![(0, chars.len())];
        let pieces = match self {
            PreTokenizer::Gpt2 => apply(&input, &whole, split_gpt2),
            PreTokenizer::DigitsThenGpt2 => {
                let digits = apply(&input, &whole, |c, s, e, out| split_runs(c, s, e, out, |k, _| k.number, 1));
                apply(&input, &digits, split_gpt2)
            }
            PreTokenizer::Llama3 { max_digits } => {
                apply(&input, &whole, |c, s, e, out| split_llama3(c, s, e, out, *max_digits))
            }
            PreTokenizer::Default => {
                let punct =
                    apply(&input, &whole, |c, s, e, out| split_runs(c, s, e, out, is_default_punct, usize::MAX));
                let words = apply(&input, &punct, split_gpt2);
                let numbers =
                    apply(&input, &words, |c, s, e, out| split_runs(c, s, e, out, |k, _| k.number, usize::MAX));
                apply(&input, &numbers, split_ascii_digit_triples)
            }
        };
        pieces
            .into_iter()
            .map(|(start, end)| {
                let from = chars[start].0;
                let to = chars.get(end).map_or(text.len(), |&(i, _)| i);
                &text[from..to]
            })
            .collect()
    }
}

/// The text as code points with their classes.
struct Chars<'a> {
    chars: &'a [(usize, char)],
    classes: &'a [CharClass],
}

/// Collects the pieces a splitter finds inside one range; gaps between them are kept as pieces too.
struct Pieces {
    out: Vec<(usize, usize)>,
    prev_end: usize,
}

impl Pieces {
    /// Ends a piece at `end` (empty pieces are dropped); returns its length.
    fn cut(&mut self, end: usize) -> usize {
        let len = end - self.prev_end;
        if len > 0 {
            self.out.push((self.prev_end, end));
        }
        self.prev_end = end;
        len
    }
}

fn apply(
    input: &Chars<'_>,
    ranges: &[(usize, usize)],
    mut splitter: impl FnMut(&Chars<'_>, usize, usize, &mut Pieces),
) -> Vec<(usize, usize)> {
    let mut pieces = Pieces { out: Vec::with_capacity(ranges.len()), prev_end: 0 };
    for &(start, end) in ranges {
        pieces.prev_end = start;
        splitter(input, start, end, &mut pieces);
        pieces.cut(end);
    }
    pieces.out
}

/// Splits out maximal runs of code points accepted by `is_member`, cut into chunks of at most `max_len`
/// (as `\p{N}` with `max_len` 1 or `[...]+` with no limit). Text between runs stays one piece.
fn split_runs(
    input: &Chars<'_>,
    start: usize,
    end: usize,
    pieces: &mut Pieces,
    is_member: impl Fn(CharClass, char) -> bool,
    max_len: usize,
) {
    let mut pos = start;
    while pos < end {
        if !is_member(input.classes[pos], input.chars[pos].1) {
            pos += 1;
            continue;
        }
        pieces.cut(pos);
        let run_start = pos;
        while pos < end && is_member(input.classes[pos], input.chars[pos].1) && pos - run_start < max_len {
            pos += 1;
        }
        pieces.cut(pos);
    }
}

/// `[\p{P}\$\+<=>\^~\|]+` of llama.cpp's default family.
fn is_default_punct(class: CharClass, c: char) -> bool {
    class.punctuation || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
}

/// `[0-9][0-9][0-9]`: exactly three ASCII digits per match, leftmost first.
fn split_ascii_digit_triples(input: &Chars<'_>, start: usize, end: usize, pieces: &mut Pieces) {
    let mut pos = start;
    while pos + 3 <= end {
        if input.chars[pos..pos + 3].iter().all(|&(_, c)| c.is_ascii_digit()) {
            pieces.cut(pos);
            pos += 3;
            pieces.cut(pos);
        } else {
            pos += 1;
        }
    }
}

/// Accessors that treat positions outside `start..end` as "no code point", as llama.cpp's scanners do.
struct Window<'a, 'c> {
    input: &'a Chars<'c>,
    start: usize,
    end: usize,
}

impl Window<'_, '_> {
    fn char_at(&self, pos: usize) -> Option<char> {
        (self.start <= pos && pos < self.end).then(|| self.input.chars[pos].1)
    }
    fn class_at(&self, pos: usize) -> Option<CharClass> {
        (self.start <= pos && pos < self.end).then(|| self.input.classes[pos])
    }
    fn is_letter(&self, pos: usize) -> bool {
        self.class_at(pos).is_some_and(|c| c.letter)
    }
    fn is_number(&self, pos: usize) -> bool {
        self.class_at(pos).is_some_and(|c| c.number)
    }
    fn is_whitespace(&self, pos: usize) -> bool {
        self.class_at(pos).is_some_and(|c| c.whitespace)
    }
    /// `[^\s\p{L}\p{N}]`: a code point that is none of the three.
    fn is_other(&self, pos: usize) -> bool {
        self.class_at(pos).is_some_and(|c| !(c.whitespace || c.letter || c.number))
    }
}

/// The length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `pos`, or 0.
fn contraction_len(w: &Window<'_, '_>, pos: usize, ignore_case: bool) -> usize {
    if w.char_at(pos) != Some('\'') {
        return 0;
    }
    let fold = |c: Option<char>| c.map(|c| if ignore_case { c.to_ascii_lowercase() } else { c });
    match (fold(w.char_at(pos + 1)), fold(w.char_at(pos + 2))) {
        (Some('s' | 't' | 'm' | 'd'), _) => 2,
        (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
        _ => 0,
    }
}

/// The number of whitespace code points from `pos`.
fn whitespace_run(w: &Window<'_, '_>, pos: usize) -> usize {
    let mut n = 0;
    while w.is_whitespace(pos + n) {
        n += 1;
    }
    n
}

/// GPT-2's regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
fn split_gpt2(input: &Chars<'_>, start: usize, end: usize, pieces: &mut Pieces) {
    let w = Window { input, start, end };
    let mut pos = start;
    while pos < end {
        let contraction = contraction_len(&w, pos, false);
        if contraction > 0 {
            pos += pieces.cut(pos + contraction);
            continue;
        }
        // An optional leading space (U+0020 only) joins the run that follows it.
        let lead = usize::from(w.char_at(pos) == Some(' '));
        let first = pos + lead;
        let run_kind: Option<fn(&Window<'_, '_>, usize) -> bool> = if w.is_letter(first) {
            Some(|w, p| w.is_letter(p))
        } else if w.is_number(first) {
            Some(|w, p| w.is_number(p))
        } else if w.is_other(first) {
            Some(|w, p| w.is_other(p))
        } else {
            None
        };
        if let Some(in_run) = run_kind {
            pos = first;
            while in_run(&w, pos) {
                pos += 1;
            }
            pieces.cut(pos);
            continue;
        }
        let spaces = whitespace_run(&w, pos);
        if spaces > 1 && w.char_at(pos + spaces).is_some() {
            // `\s+(?!\S)`: leave the last whitespace to lead the next word.
            pos += spaces - 1;
            pieces.cut(pos);
            continue;
        }
        if spaces > 0 {
            pos += spaces;
            pieces.cut(pos);
            continue;
        }
        pos += 1;
        pieces.cut(pos);
    }
}

/// Llama 3's regex `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
/// \s*[\r\n]+|\s+(?!\S)|\s+`, with `{1,max_digits}` for numbers (Qwen2 uses single digits).
fn split_llama3(input: &Chars<'_>, start: usize, end: usize, pieces: &mut Pieces, max_digits: usize) {
    let w = Window { input, start, end };
    let is_newline = |c: Option<char>| matches!(c, Some('\r' | '\n'));
    let mut pos = start;
    while pos < end {
        let contraction = contraction_len(&w, pos, true);
        if contraction > 0 {
            pos += pieces.cut(pos + contraction);
            continue;
        }
        let c = w.char_at(pos);
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(is_newline(c) || w.is_number(pos)) && (w.is_letter(pos) || w.is_letter(pos + 1)) {
            pos += 1;
            while w.is_letter(pos) {
                pos += 1;
            }
            pieces.cut(pos);
            continue;
        }
        // `\p{N}{1,max_digits}`
        if w.is_number(pos) {
            let mut group_start = pos;
            while w.is_number(pos) {
                pos += 1;
                if pos - group_start >= max_digits {
                    pieces.cut(pos);
                    group_start = pos;
                }
            }
            pieces.cut(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let first = pos + usize::from(c == Some(' '));
        if w.is_other(first) {
            pos = first;
            while w.is_other(pos) {
                pos += 1;
            }
            while is_newline(w.char_at(pos)) {
                pos += 1;
            }
            pieces.cut(pos);
            continue;
        }
        let spaces = whitespace_run(&w, pos);
        // `\s*[\r\n]+`: up to the last newline of the whitespace run.
        if let Some(last_newline) = (0..spaces).rev().find(|&i| is_newline(w.char_at(pos + i))) {
            pos += last_newline + 1;
            pieces.cut(pos);
            continue;
        }
        if spaces > 1 && w.char_at(pos + spaces).is_some() {
            pos += spaces - 1;
            pieces.cut(pos);
            continue;
        }
        if spaces > 0 {
            pos += spaces;
            pieces.cut(pos);
            continue;
        }
        pos += 1;
        pieces.cut(pos);
    }
}

#[cfg(test)]
mod tests {
    use super::PreTokenizer;

    #[test]
    fn gpt2_keeps_the_last_space_for_the_next_word() {
        assert_eq!(PreTokenizer::Gpt2.split("Hello  world!!"), ["Hello", " ", " world", "!!"]);
        assert_eq!(PreTokenizer::Gpt2.split("it's 42"), ["it", "'s", " 42"]);
    }

    #[test]
    fn smollm_isolates_digits() {
        assert_eq!(PreTokenizer::DigitsThenGpt2.split("a 123"), ["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn llama3_groups_digits_and_newlines() {
        let llama3 = PreTokenizer::Llama3 { max_digits: 3 };
        assert_eq!(llama3.split("12345 x\n\n  y"), ["123", "45", " x", "\n\n", " ", " y"]);
        let qwen2 = PreTokenizer::Llama3 { max_digits: 1 };
        assert_eq!(qwen2.split("I'M 12"), ["I", "'M", " ", "1", "2"]);
    }
}
