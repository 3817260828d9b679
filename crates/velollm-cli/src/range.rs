//! llama-bench's value lists: every swept flag takes a comma list whose items are single values or ranges,
//! `first-last` (step 1), `first-last+step` (arithmetic) or `first-last*factor` (geometric).
//! `0-32+8` is 0, 8, 16, 24, 32; `64-512*2` is 64, 128, 256, 512.

/// The most values one list may expand to: a typo such as `1-100000000` must be an error, not an hour of
/// allocation and a plan nobody meant.
pub const MAX_VALUES: usize = 4096;

/// Why a list could not be read. The message names the flag and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} '{spec}': {reason}")]
pub struct RangeError {
    pub flag: String,
    pub spec: String,
    pub reason: String,
}

/// Parses a comma list of unsigned integers and ranges. Values keep the order given; duplicates are dropped
/// (the first occurrence stays).
pub fn parse_u32_list(flag: &str, spec: &str) -> Result<Vec<u32>, RangeError> {
    parse_list(flag, spec, |item| parse_u32_item(item).map(|v| v.into_iter().map(Some).collect()))
        .map(|values| values.into_iter().flatten().collect())
}

/// Parses a comma list where each item is either a word from `words` (mapped to `None`, e.g. `all`) or
/// an unsigned integer or range.
pub fn parse_u32_list_with_word(flag: &str, spec: &str, word: &str) -> Result<Vec<Option<u32>>, RangeError> {
    parse_list(flag, spec, |item| {
        if item.eq_ignore_ascii_case(word) {
            Ok(vec![None])
        } else {
            parse_u32_item(item).map(|v| v.into_iter().map(Some).collect())
        }
    })
}

/// Parses a comma list of values of any type with `FromStr` (no ranges), e.g. `--flash-attn on,off`.
pub fn parse_value_list<T: std::str::FromStr + PartialEq>(flag: &str, spec: &str) -> Result<Vec<T>, RangeError>
where
    T::Err: std::fmt::Display,
{
    parse_list(flag, spec, |item| item.parse::<T>().map(|v| vec![v]).map_err(|e| e.to_string()))
}

fn parse_list<T: PartialEq>(
    flag: &str,
    spec: &str,
    mut item: impl FnMut(&str) -> Result<Vec<T>, String>,
) -> Result<Vec<T>, RangeError> {
    let fail = |reason: String| RangeError { flag: flag.to_string(), spec: spec.to_string(), reason };
    if spec.trim().is_empty() {
        return Err(fail("the list is empty".into()));
    }
    let mut values: Vec<T> = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(fail("an item of the list is empty".into()));
        }
        for value in item(part).map_err(&fail)? {
            if !values.contains(&value) {
                values.push(value);
            }
            if values.len() > MAX_VALUES {
                return Err(fail(format!("it expands to more than {MAX_VALUES} values")));
            }
        }
    }
    Ok(values)
}

fn number(text: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("'{text}' is negative"));
    }
    text.parse::<u64>()
        .map_err(|_| format!("'{text}' is not a whole number"))
        .and_then(|v| u32::try_from(v).map_err(|_| format!("{v} is larger than {}", u32::MAX)))
}

/// One item: a value, `a-b`, `a-b+s` or `a-b*f`.
fn parse_u32_item(item: &str) -> Result<Vec<u32>, String> {
    let Some((first, rest)) = item.split_once('-').filter(|(first, _)| !first.is_empty()) else {
        return number(item).map(|v| vec![v]);
    };
    let first = number(first)?;
    enum Step {
        Add(u32),
        Mul(u32),
    }
    let (last, step) = if let Some((last, step)) = rest.split_once('+') {
        (number(last)?, Step::Add(number(step)?))
    } else if let Some((last, factor)) = rest.split_once('*') {
        (number(last)?, Step::Mul(number(factor)?))
    } else {
        (number(rest)?, Step::Add(1))
    };
    if first > last {
        return Err(format!("the range starts at {first}, after its end {last}"));
    }
    let mut values = Vec::new();
    let mut value = u64::from(first);
    match step {
        Step::Add(0) => return Err("the step of a range must be at least 1".into()),
        Step::Mul(factor) if factor < 2 => return Err("the factor of a range must be at least 2".into()),
        Step::Mul(_) if first == 0 => return Err("a geometric range cannot start at 0".into()),
        Step::Add(step) => {
            while value <= u64::from(last) {
                values.push(value as u32);
                if values.len() > MAX_VALUES {
                    return Err(format!("it expands to more than {MAX_VALUES} values"));
                }
                value += u64::from(step);
            }
        }
        Step::Mul(factor) => {
            while value <= u64::from(last) {
                values.push(value as u32);
                value *= u64::from(factor);
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(spec: &str) -> Result<Vec<u32>, String> {
        parse_u32_list("--threads", spec).map_err(|e| e.to_string())
    }

    #[test]
    fn values_and_ranges() {
        assert_eq!(list("4").unwrap(), [4]);
        assert_eq!(list("1,2, 4").unwrap(), [1, 2, 4]);
        assert_eq!(list("0-32+8").unwrap(), [0, 8, 16, 24, 32]);
        assert_eq!(list("64-512*2").unwrap(), [64, 128, 256, 512]);
        assert_eq!(list("1-3").unwrap(), [1, 2, 3]);
        assert_eq!(list("0-10+4").unwrap(), [0, 4, 8], "a step that overshoots stops before the end");
        assert_eq!(list("64-500*2").unwrap(), [64, 128, 256]);
        assert_eq!(list("2,1-3").unwrap(), [2, 1, 3], "duplicates dropped, first order kept");
        assert_eq!(list("7-7+1").unwrap(), [7]);
    }

    #[test]
    fn bad_specs_are_one_line_errors_naming_the_flag() {
        let cases = [
            ("8-0+1", "starts at 8, after its end 0"),
            ("1-8+0", "step of a range must be at least 1"),
            ("1-8*1", "factor of a range must be at least 2"),
            ("0-8*2", "geometric range cannot start at 0"),
            ("x", "'x' is not a whole number"),
            ("", "the list is empty"),
            ("1,,2", "an item of the list is empty"),
            ("-3", "'-3' is negative"),
            ("99999999999", "larger than 4294967295"),
            ("0-4294967295", "more than 4096 values"),
            ("1-2+x", "'x' is not a whole number"),
        ];
        for (spec, expected) in cases {
            let err = list(spec).unwrap_err();
            assert!(err.starts_with(&format!("invalid --threads '{spec}': ")), "{spec}: {err}");
            assert!(err.contains(expected), "{spec}: expected '{expected}' in: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn words_and_typed_lists() {
        let ngl = parse_u32_list_with_word("-ngl", "0,8,all", "all").unwrap();
        assert_eq!(ngl, [Some(0), Some(8), None]);
        let fa: Vec<velollm_core::FlashAttention> = parse_value_list("--flash-attn", "on,off").unwrap();
        assert_eq!(fa, [velollm_core::FlashAttention::On, velollm_core::FlashAttention::Off]);
        let err = parse_value_list::<velollm_core::FlashAttention>("--flash-attn", "on,maybe").unwrap_err();
        assert!(err.to_string().contains("invalid flash-attention policy 'maybe'"), "{err}");
    }
}
