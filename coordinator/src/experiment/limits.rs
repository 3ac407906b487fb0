//! Bounds on a YAML document, checked before the YAML parser sees it.
//!
//! The YAML parser (libyaml, under `serde_norway`) takes time quadratic in
//! the nesting depth: 100 k nested brackets in 200 KB took 19 s, 30 k
//! nested maps 8.5 s. A Control request carrying such a file must be refused
//! in microseconds, so this module measures size and nesting with one
//! linear pass over the text, without building anything. The pass
//! over-counts rather than under-counts (a plain scalar continued on a more
//! indented line counts as one level), and real experiment files nest
//! fewer than ten levels, far below [`MAX_DEPTH`].

use std::collections::HashMap;

use super::parse::Error;

/// Largest document accepted. By default, 1 MiB: an experiment or game-day
/// file is a few KB; this leaves room for generated files and stays well
/// below the gRPC message limit (4 MiB).
pub const MAX_BYTES: usize = 1 << 20;

/// Deepest nesting accepted (block mappings and sequences plus flow `[ ]`
/// and `{ }`). By default, 64: real files nest fewer than ten levels, and
/// at 64 the parser's quadratic cost stays in microseconds.
pub const MAX_DEPTH: usize = 64;

/// Checks `text` (named `file` in errors) against [`MAX_BYTES`] and
/// [`MAX_DEPTH`]. Linear in the size of `text`.
pub fn check(file: &str, text: &str) -> Result<(), Error> {
    check_with(file, text, MAX_BYTES, MAX_DEPTH)
}

/// Checks, before `${var}` substitution, that neither `source` nor the text
/// substitution would make from it exceeds [`MAX_BYTES`], so a short file
/// with long variable values cannot build a huge string. Linear in the size
/// of `source`.
pub fn check_source(file: &str, source: &str, vars: &HashMap<String, String>) -> Result<(), Error> {
    check_size(file, source.len(), MAX_BYTES, false)?;
    let mut size = source.len();
    let mut rest = source;
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find('}') else { break };
        let (name, _) = super::vars::split_placeholder(&rest[..end]);
        size = size.saturating_add(vars.get(name).map_or(0, String::len));
        rest = &rest[end + 1..];
    }
    check_size(file, size, MAX_BYTES, true)
}

fn check_size(file: &str, len: usize, max_bytes: usize, substituted: bool) -> Result<(), Error> {
    if len <= max_bytes {
        return Ok(());
    }
    Err(Error {
        file: file.to_string(),
        line: 0,
        column: 0,
        message: format!(
            "the document is {len} bytes{}, over the limit of {max_bytes} bytes ({} KiB)",
            if substituted {
                " with its variables substituted"
            } else {
                ""
            },
            max_bytes / 1024
        ),
    })
}

/// [`check`] with explicit limits.
pub fn check_with(file: &str, text: &str, max_bytes: usize, max_depth: usize) -> Result<(), Error> {
    check_size(file, text.len(), max_bytes, false)?;
    let mut s = Scan::default();
    for (i, line) in text.split('\n').enumerate() {
        if let Some((column, depth)) = s.line(line, max_depth) {
            return Err(Error {
                file: file.to_string(),
                line: i + 1,
                column,
                message: format!("nesting is {depth} levels deep here, over the limit of {max_depth} levels"),
            });
        }
    }
    Ok(())
}

/// What the scan carries from one line to the next.
#[derive(Default)]
struct Scan {
    /// Columns of the open block collections, innermost last.
    indents: Vec<usize>,
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// Inside a quoted scalar that continues on the next line.
    quote: Option<char>,
    /// Inside a block scalar (`|`, `>`) whose header line had this indent:
    /// more indented lines are its text.
    block_scalar: Option<usize>,
}

impl Scan {
    /// Scans one line; returns the 1-based column and depth where nesting
    /// first exceeds `max`.
    fn line(&mut self, line: &str, max: usize) -> Option<(usize, usize)> {
        let b = line.as_bytes();
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        let blank = b[indent..].iter().all(|c| c.is_ascii_whitespace()) || b.get(indent) == Some(&b'#');
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return None;
            }
            self.block_scalar = None;
        }
        let mut i = 0;
        // Block structure only counts outside flow collections and quotes.
        if self.flow == 0 && self.quote.is_none() {
            if blank {
                return None;
            }
            while self.indents.last().is_some_and(|&top| top > indent) {
                self.indents.pop();
            }
            if self.indents.last() != Some(&indent) {
                self.indents.push(indent);
            }
            i = indent;
            // "- - x" and "? ? x" open one more block collection per indicator.
            while i < b.len() && matches!(b[i], b'-' | b'?') && b.get(i + 1).is_none_or(|c| *c == b' ') {
                i += 1;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                if i < b.len() {
                    self.indents.push(i);
                }
            }
            if self.indents.len() > max {
                return Some((i + 1, self.indents.len()));
            }
        }
        let mut value_start = true;
        let mut prev_space = true;
        while i < b.len() {
            let c = b[i];
            match self.quote {
                Some('"') => {
                    if c == b'\\' {
                        i += 1;
                    } else if c == b'"' {
                        self.quote = None;
                        value_start = false;
                    }
                    i += 1;
                    continue;
                }
                Some(_) => {
                    if c == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            self.quote = None;
                            value_start = false;
                        }
                    }
                    i += 1;
                    continue;
                }
                None => {}
            }
            match c {
                b'#' if prev_space => break,
                b' ' | b'\t' | b'\r' => {}
                b'"' | b'\'' if value_start => self.quote = Some(c as char),
                b'[' | b'{' if value_start || self.flow > 0 => {
                    self.flow += 1;
                    let depth = self.indents.len() + self.flow;
                    if depth > max {
                        return Some((i + 1, depth));
                    }
                    value_start = true;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    value_start = false;
                }
                b',' if self.flow > 0 => value_start = true,
                b':' | b'-' | b'?' if b.get(i + 1).is_none_or(|n| matches!(n, b' ' | b'\t' | b'\r')) => {
                    value_start = true
                }
                b'|' | b'>' if value_start && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    break;
                }
                // Anchors and tags come before the value they name.
                b'&' | b'!' if value_start => {
                    while i < b.len() && !matches!(b[i], b' ' | b'\t') {
                        i += 1;
                    }
                    prev_space = true;
                    continue;
                }
                _ => value_start = false,
            }
            prev_space = matches!(c, b' ' | b'\t');
            i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<Error> {
        check_with("t.yaml", text, MAX_BYTES, 4).err()
    }

    #[test]
    fn ordinary_files_pass() {
        let text = "name: x\nhypothesis:\n  probes:\n    - name: a\n      http: { url: \"http://[::1]:80/\", expect: [200] }\nfaults:\n  - kill: { cmdline: 'it''s [' }\n    note: |\n      [[[[[[\n        {{{{{{\n    ok: \"a # [[[[\"  # [[[[[\n";
        assert_eq!(check_with("t.yaml", text, MAX_BYTES, 6), Ok(()));
        for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../experiments")).unwrap() {
            let p = f.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!(check_with("x", &text, MAX_BYTES, 10), Ok(()), "{}", p.display());
        }
    }

    #[test]
    fn deep_flow_nesting_is_refused_with_its_position_and_the_limit() {
        let e = depth_error("a: [[[[[1]]]]]\n").unwrap();
        assert_eq!((e.line, e.column), (1, 7), "{e}");
        assert!(e.message.contains("over the limit of 4 levels"), "{e}");
        // Also across lines, behind anchors and tags, in a sequence.
        assert!(depth_error("a:\n  - &x !!seq [\n    [\n  [[1]]]]\n").is_some());
        assert!(depth_error("[[[[[[").is_some());
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let text: String = (0..6).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert_eq!(depth_error(&text).unwrap().line, 5);
        assert!(depth_error("- - - - - x\n").is_some());
        assert!(depth_error("a:\n b:\n  c:\n   d:\n").is_none());
    }

    #[test]
    fn quoted_scalars_comments_and_block_text_do_not_count() {
        assert!(depth_error("a: \"[[[[[[\"\nb: '{{{{{{'\nc: x # [[[[[[\nd: |\n   [[[[[[\n").is_none());
        assert!(depth_error("a: \"[[\n[[[[[\"\n").is_none());
        // A bracket inside a plain scalar is text.
        assert!(depth_error("cmdline: a[[[[[[\n").is_none());
    }

    #[test]
    fn an_oversized_document_is_refused_before_scanning() {
        let e = check_with("big.yaml", &"#".repeat(2000), 1024, 64).unwrap_err();
        assert!(e.message.contains("2000 bytes, over the limit of 1024 bytes"), "{e}");
    }

    #[test]
    fn long_variable_values_cannot_grow_a_short_file_past_the_limit() {
        let vars = HashMap::from([("v".to_string(), "x".repeat(MAX_BYTES / 4))]);
        assert!(check_source("t.yaml", "a: ${v}\nb: ${v}\n", &vars).is_ok());
        let e = check_source("t.yaml", &"a: ${v}\n".repeat(5), &vars).unwrap_err();
        assert!(e.message.contains("with its variables substituted"), "{e}");
    }

    #[test]
    fn a_hostile_document_is_checked_in_linear_time() {
        let started = std::time::Instant::now();
        let brackets = "[".repeat(MAX_BYTES - 10);
        assert!(check("h.yaml", &brackets).is_err());
        let maps: String = (0..3000).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(check("h.yaml", &maps[..maps.len().min(MAX_BYTES)]).is_err());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
