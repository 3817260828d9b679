//! Byte-level BPE merges within one pre-tokenized word, in llama.cpp's order: the pair with the lowest merge
//! rank first, the leftmost among equal ranks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

pub(crate) struct Merger<'v> {
    pub token_ids: &'v HashMap<String, u32>,
    /// `"left right"` → rank (line number in `tokenizer.ggml.merges`).
    pub merge_ranks: &'v HashMap<String, u32>,
    pub byte_chars: &'v [char; 256],
    /// Llama 3's rule: a word that is a token as a whole becomes that token without merging.
    pub ignore_merges: bool,
}

/// A symbol: a byte range of the encoded word; merged-away symbols have `len == 0`.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Merger<'_> {
    /// Appends the ids of `word` (raw UTF-8) to `out`.
    pub fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        let encoded: String = word.bytes().map(|b| self.byte_chars[b as usize]).collect();
        if self.ignore_merges {
            if let Some(&id) = self.token_ids.get(&encoded) {
                out.push(id);
                return;
            }
        }
        for text in self.merge(&encoded) {
            match self.token_ids.get(text) {
                Some(&id) => out.push(id),
                // Not a token: each byte as a token of its own, where it is one (llama.cpp drops the rest).
                None => {
                    for c in text.chars() {
                        if let Some(&id) = self.token_ids.get(c.encode_utf8(&mut [0; 4]) as &str) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }

    /// The word's final symbols after all merges, in order.
    fn merge<'w>(&self, encoded: &'w str) -> Vec<&'w str> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(encoded.len());
        for (i, (start, c)) in encoded.char_indices().enumerate() {
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        // Min-heap on (rank, left index); entries whose symbols changed since are skipped when popped.
        let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        let text_of = |symbols: &[Symbol], i: usize| &encoded[symbols[i].start..symbols[i].start + symbols[i].len];
        let mut key = String::new();
        let mut push_pair =
            |symbols: &[Symbol], queue: &mut BinaryHeap<_>, left: Option<usize>, right: Option<usize>| {
                let (Some(left), Some(right)) = (left, right) else { return };
                key.clear();
                key.push_str(text_of(symbols, left));
                key.push(' ');
                key.push_str(text_of(symbols, right));
                if let Some(&rank) = self.merge_ranks.get(&key) {
                    queue.push(Reverse((rank, left, right, symbols[left].len + symbols[right].len)));
                }
            };
        for i in 1..symbols.len() {
            push_pair(&symbols, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(Reverse((_, left, right, merged_len))) = queue.pop() {
            let (l, r) = (symbols[left], symbols[right]);
            // Stale: one side was merged into something else since this pair was queued.
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
        symbols.iter().filter(|s| s.len > 0).map(|s| &encoded[s.start..s.start + s.len]).collect()
    }
}
