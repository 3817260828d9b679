//! Code point classes as llama.cpp's pre-tokenizers see them: `\p{L}`, `\p{N}`, `\p{P}` are Unicode general
//! categories, and `\s` is llama.cpp's fixed list of whitespace code points (not Rust's `char::is_whitespace`,
//! which differs on U+001C..U+001F).

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

/// The classes the pre-tokenizers branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CharClass {
    pub letter: bool,
    pub number: bool,
    pub punctuation: bool,
    pub whitespace: bool,
}

pub(crate) fn classify(c: char) -> CharClass {
    let category = get_general_category(c);
    CharClass {
        letter: matches!(
            category,
            Gc::UppercaseLetter | Gc::LowercaseLetter | Gc::TitlecaseLetter | Gc::ModifierLetter | Gc::OtherLetter
        ),
        number: matches!(category, Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber),
        punctuation: matches!(
            category,
            Gc::ConnectorPunctuation
                | Gc::DashPunctuation
                | Gc::OpenPunctuation
                | Gc::ClosePunctuation
                | Gc::InitialPunctuation
                | Gc::FinalPunctuation
                | Gc::OtherPunctuation
        ),
        whitespace: is_whitespace(c),
    }
}

/// llama.cpp's `unicode_set_whitespace`.
fn is_whitespace(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}

/// GPT-2's byte-level alphabet: every byte becomes a printable code point, so merges can be stored as text.
/// Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 onwards, in byte order.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_unprintable = 0x100u32;
    for (byte, slot) in table.iter_mut().enumerate() {
        let printable = matches!(byte, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            byte as u32
        } else {
            let code = next_unprintable;
            next_unprintable += 1;
            code
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_general_categories() {
        assert!(classify('é').letter && classify('中').letter);
        assert!(classify('7').number && classify('½').number);
        assert!(classify('!').punctuation && !classify('$').punctuation);
        assert!(classify('\u{3000}').whitespace && !classify('\u{1C}').whitespace);
        let emoji = classify('😀');
        assert!(!emoji.letter && !emoji.number && !emoji.whitespace);
    }

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let table = byte_to_char_table();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'A' as usize], 'A');
        assert_eq!(table[0xAD], 'Ń');
    }
}
