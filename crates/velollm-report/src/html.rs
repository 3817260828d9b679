//! The page around the charts: escaping, the stylesheet, and the document shell. Nothing is fetched: the
//! styles are inline and the page has no scripts.

/// Text made safe inside HTML and SVG, in content and in quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub const STYLE: &str = r#"
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --soft: #eaeef2; --bg: #f6f8fa; --red: #cf222e; --green: #1a7f37; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; color: var(--fg); background: var(--bg); }
header { background: #0d1117; color: #f0f6fc; padding: 28px 40px 24px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; letter-spacing: -0.01em; }
header .sub { color: #9da7b3; font-size: 13px; }
header .files { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 8px; }
header .file { background: #161b22; border: 1px solid #30363d; border-radius: 999px; padding: 2px 12px; font-size: 12px; color: #c9d1d9; }
main { max-width: 1320px; margin: 0 auto; padding: 8px 40px 64px; }
section { margin-top: 36px; }
h2 { font-size: 19px; font-weight: 600; margin: 0 0 4px; }
h2 + .note { margin-top: 0; }
.note { color: var(--muted); font-size: 13px; margin: 4px 0 14px; max-width: 900px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px; margin-top: 24px; }
.tile { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; }
.tile .what { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: 0.04em; }
.tile .value { font-size: 26px; font-weight: 600; margin-top: 2px; font-variant-numeric: tabular-nums; }
.tile .value small { font-size: 14px; font-weight: 500; color: var(--muted); }
.tile .how { color: var(--muted); font-size: 12px; }
.tile.bad .value { color: var(--red); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px 10px; min-width: 0; }
.card h3 { font-size: 14px; font-weight: 600; margin: 0; }
.card .meta { color: var(--muted); font-size: 12px; margin: 2px 0 6px; }
.legend { display: flex; flex-wrap: wrap; gap: 2px 14px; font-size: 12px; color: var(--muted); margin: 4px 0 2px; }
.legend span { white-space: nowrap; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 5px; vertical-align: -1px; }
.swatch.cross { border-radius: 0; background: none; color: var(--red); width: auto; height: auto; font-weight: 700; }
svg.chart { width: 100%; height: auto; display: block; overflow: visible; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; background: #fff; border: 1px solid var(--line); border-radius: 10px; overflow: hidden; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--soft); text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; color: var(--muted); font-size: 12px; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.absent { background: var(--soft); }
tr.failed td { background: #fff8f8; }
tr.incomplete td { background: #fffbea; }
.status { font-weight: 600; font-size: 12px; border-radius: 999px; padding: 1px 8px; white-space: nowrap; }
.status.ok { color: var(--green); background: #dafbe1; }
.status.failed { color: var(--red); background: #ffebe9; }
.status.incomplete { color: #9a6700; background: #fff8c5; }
.error { color: var(--red); font-size: 12px; }
.unmatched { font-size: 13px; margin: 8px 0 0; padding-left: 18px; color: var(--muted); }
.verdicts { display: flex; gap: 16px; font-size: 13px; margin: 0 0 10px; }
.verdicts b.faster { color: var(--green); } .verdicts b.slower { color: var(--red); }
footer { color: var(--muted); font-size: 12px; margin-top: 48px; }
@media (max-width: 700px) { .grid { grid-template-columns: 1fr; } main, header { padding-left: 16px; padding-right: 16px; } .pair { grid-template-columns: 1fr; } }
"#;

/// The whole page.
pub fn page(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"velollm report\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>{header}</header>\n<main>\n{body}\n</main>\n</body>\n</html>\n",
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
