//! `${name}` placeholders in experiment files, replaced before the YAML is
//! read: `${name}` takes the value given for `name` (`--var`, a game day's
//! `vars:`, a Control request's vars) and is an error when none is given;
//! `${name:-default}` falls back to `default`; `$${` stands for a literal
//! `${`. Replacement is line by line, so line numbers stay true.

use std::collections::HashMap;

use super::parse::{Error, Result};

/// Splits the inside of a placeholder into the variable's name and its
/// default, if one is written (`port:-8080` → `port`, `Some("8080")`).
pub fn split_placeholder(inner: &str) -> (&str, Option<&str>) {
    match inner.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (inner, None),
    }
}

/// Replaces every placeholder of `source` (named `file` in errors).
pub fn substitute(file: &str, source: &str, vars: &HashMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(source.len());
    for (lineno, line) in source.split_inclusive('\n').enumerate() {
        let mut rest = line;
        let mut col = 1;
        while let Some(i) = rest.find("${") {
            if i > 0 && rest.as_bytes()[i - 1] == b'$' {
                out.push_str(&rest[..i - 1]);
                // `$${group.KEY}` stays escaped for the group pass.
                out.push_str(if rest[i + 2..].starts_with(super::groups::PREFIX) {
                    "$${"
                } else {
                    "${"
                });
                col += i + 2;
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let err = |message: String| Error {
                file: file.to_string(),
                line: lineno + 1,
                column: col + i,
                message,
            };
            let Some(end) = after.find('}') else {
                return Err(err("unterminated ${ placeholder: write ${name}".into()));
            };
            let (name, default) = split_placeholder(&after[..end]);
            if name.starts_with(super::groups::PREFIX) {
                out.push_str(&rest[i..i + 2 + end + 1]);
                col += i + 2 + end + 1;
                rest = &after[end + 1..];
                continue;
            }
            match (vars.get(name), default) {
                (Some(v), _) if v.contains('\n') => {
                    return Err(err(format!("value of variable {name} contains a newline")))
                }
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(err(format!(
                        "variable ${{{name}}} is not set{}",
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" (set: {})", known.join(", "))
                        }
                    )));
                }
            }
            col += i + 2 + end + 1;
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_placeholder_stays_literal() {
        let out = substitute("f", "a: $${x} ${y}\n", &HashMap::from([("y".into(), "1".into())])).unwrap();
        assert_eq!(out, "a: ${x} 1\n");
    }

    #[test]
    fn a_default_applies_only_when_the_variable_is_not_set() {
        let src = "url: http://${host:-127.0.0.1}:${port:-8080}/ ${empty:-}.\n";
        assert_eq!(
            substitute("f", src, &HashMap::new()).unwrap(),
            "url: http://127.0.0.1:8080/ .\n"
        );
        let vars = HashMap::from([("port".into(), "9".into())]);
        assert_eq!(substitute("f", src, &vars).unwrap(), "url: http://127.0.0.1:9/ .\n");
        // A default of its own does not make another placeholder optional.
        let err = substitute("f", "a: ${x:-1}\nb: ${y}\n", &HashMap::new()).unwrap_err();
        assert_eq!((err.line, err.column), (2, 4), "{err}");
        assert!(err.message.starts_with("variable ${y} is not set"), "{err}");
    }
}
