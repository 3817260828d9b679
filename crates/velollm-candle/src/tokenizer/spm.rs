//! SentencePiece-style merging as llama.cpp's SPM tokenizer does it: start from single code points, merge
//! the adjacent pair whose merged text is the token with the highest score (the leftmost among equal
//! scores), and encode what never became a token as `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub(crate) struct Merger<'v> {
    pub token_ids: &'v HashMap<String, u32>,
    pub scores: &'v [f32],
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge. Ordered so that a max-heap pops the highest score, then the leftmost pair.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    merged_len: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}

impl Merger<'_> {
    /// Appends the ids of `text` (spaces already escaped as `▁`) to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let push_pair =
            |symbols: &[Symbol], queue: &mut BinaryHeap<Candidate>, left: Option<usize>, right: Option<usize>| {
                let (Some(left), Some(right)) = (left, right) else { return };
                let (l, r) = (symbols[left], symbols[right]);
                let merged = &text[l.start..r.start + r.len];
                if let Some(&id) = self.token_ids.get(merged) {
                    let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
                    queue.push(Candidate { score, left, right, merged_len: l.len + r.len });
                }
            };
        for i in 1..symbols.len() {
            push_pair(&symbols, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(Candidate { left, right, merged_len, .. }) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            if l.len == 0 || r.len == 0 || l.next != Some(right) || l.len + r.len != merged_len {
                continue;
            }
            symbols[left].len += r.len;
            symbols[right].len = 0;
            symbols[left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(left);
            }
            push_pair(&symbols, &mut queue, symbols[left].prev, Some(left));
            push_pair(&symbols, &mut queue, Some(left), symbols[left].next);
        }
        for symbol in symbols.iter().filter(|s| s.len > 0) {
            let piece = &text[symbol.start..symbol.start + symbol.len];
            match self.token_ids.get(piece) {
                Some(&id) => out.push(id),
                // Only single code points can be left unknown (merges always produce tokens).
                None => {
                    for byte in piece.bytes() {
                        if let Some(id) = self.byte_token(byte) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }

    /// `<0xXX>`, or the byte itself as a one-character token where the vocabulary has no byte tokens.
    fn byte_token(&self, byte: u8) -> Option<u32> {
        let hex = format!("<0x{byte:02X}>");
        self.token_ids.get(&hex).or_else(|| self.token_ids.get(&(byte as char).to_string())).copied()
    }
}
