//! The kubelet's `$(VAR)` expansion (`third_party/forked/golang/expansion`).
//!
//! The rules, exactly as upstream (after k/k PR #136325, which made the
//! `$`-plus-rune case UTF-8 safe):
//!
//! - `$$` is a literal `$` (so `$$(X)` gives the literal `$(X)`);
//! - `$(` scans to the **first** `)`; everything in between is the name (not
//!   validated, may be empty, may contain `$` or `(`). A known name is replaced
//!   by its value, an unknown one stays as the literal `$(name)`;
//! - `$(` with no `)` after it is kept as-is;
//! - `$` followed by any other character is kept unchanged, and so is a
//!   trailing `$`;
//! - substituted values are never re-scanned (no recursion).

/// Expands `$(NAME)` references in `input` using `lookup`, with the kubelet's
/// exact rules: `$$` is a literal `$`, unknown names stay verbatim, no recursion,
/// a `$` followed by anything else is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    // Scanning bytes is safe: `$`, `(` and `)` are ASCII, and no byte of a
    // multi-byte UTF-8 sequence is ever ASCII, so every index we slice at is
    // a char boundary.
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            // Bytes consumed after the `$`.
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest[1..].find(')') {
                    Some(i) => {
                        let name = &rest[1..1 + i];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i + 2
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // `rest` is non-empty, so there is a next char.
                    let ch = rest.chars().next().unwrap_or('$');
                    out.push('$');
                    out.push(ch);
                    ch.len_utf8()
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// A lookup over `(name, value)` pairs where the **last** entry of a name wins,
/// as with the kubelet's `EnvVarsToMap` (used for the static expansion of exec
/// probe and preStop commands).
pub fn static_lookup(pairs: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ex(s: &str) -> String {
        let c = HashMap::from([
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
        ]);
        expand(s, |n| c.get(n).map(|v| v.to_string()))
    }

    /// The doExpansionTest table of k/k `expand_test.go` (context A/B/C/REF/EMPTY)
    /// plus the edge results quoted in kubelet-semantics.md §2.2.
    #[test]
    fn upstream_vectors() {
        let cases: &[(&str, &str)] = &[
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("___$(VAR_C)", "___C"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_A)-1", "A-1"),
            ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
            ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
            ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
            ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
            ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("$(VAR_EMPTY)", ""),
            ("$(VAR_A)$(VAR_EMPTY)$(VAR_B)", "AB"),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$(VAR_DNE)_$(VAR_A)", "$(VAR_DNE)_A"),
            ("$(VAR_A", "$(VAR_A"),
            ("$VAR_A", "$VAR_A"),
            ("${VAR_A}", "${VAR_A}"),
            ("$?_boo_$!", "$?_boo_$!"),
            ("$1", "$1"),
            ("$(foo$$var)", "$(foo$$var)"),
            ("$(VAR_A)_$(VAR_B)_$(VAR_C)_$(VAR_REF)", "A_B_C_$(VAR_A)"),
            ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
            ("$$$$$$$(VAR_A)", "$$$A"),
            ("$$$$(VAR_A)$$$$$(VAR_B)", "$$(VAR_A)$$B"),
            ("$(VAR_C)_______$(", "C_______$("),
            ("$(VAR_C)_______$", "C_______$"),
            ("vux$(VAR_A)zab$", "vuxAzab$"),
            ("$", "$"),
            ("$$", "$"),
            ("$(", "$("),
            ("$()", "$()"),
            ("$()$(VAR_A)", "$()A"),
            ("", ""),
            ("$)", "$)"),
            ("$$$", "$$"),
            ("no dollars here", "no dollars here"),
        ];
        for (input, want) in cases {
            assert_eq!(&ex(input), want, "input {input:?}");
        }
    }

    #[test]
    fn utf8_after_dollar_is_kept_whole() {
        assert_eq!(ex("$£"), "$£");
        assert_eq!(ex("$€100"), "$€100");
        assert_eq!(ex("$中文$(VAR_A)"), "$中文A");
        assert_eq!(ex("£$(VAR_A)€"), "£A€");
        assert_eq!(ex("$(中)"), "$(中)");
        assert_eq!(ex("x$🦀"), "x$🦀");
        let c = HashMap::from([("中", "zh")]);
        assert_eq!(expand("$(中)!", |n| c.get(n).map(|v| v.to_string())), "zh!");
    }

    #[test]
    fn map_reference_steps_are_not_recursive() {
        // TestMapReference: env entries expanded in order against earlier ones.
        let mut env: Vec<(String, String)> = Vec::new();
        let decl = [("FOO", "bar"), ("ZOO", "$(FOO)-1"), ("BLU", "$(ZOO)-2")];
        for (k, v) in decl {
            let expanded = expand(v, static_lookup(&env));
            env.push((k.to_string(), expanded));
        }
        assert_eq!(env[1].1, "bar-1");
        assert_eq!(env[2].1, "bar-1-2");
    }

    #[test]
    fn static_lookup_last_wins() {
        let pairs = vec![
            ("A".to_string(), "1".to_string()),
            ("A".to_string(), "2".to_string()),
        ];
        assert_eq!(expand("$(A)", static_lookup(&pairs)), "2");
        assert_eq!(expand("$(B)", static_lookup(&pairs)), "$(B)");
    }

    /// Straightforward reference implementation over chars, for the proptest.
    fn model(s: &str, f: impl Fn(&str) -> Option<String>) -> String {
        let c: Vec<char> = s.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < c.len() {
            if c[i] == '$' && i + 1 < c.len() {
                match c[i + 1] {
                    '$' => {
                        out.push('$');
                        i += 2;
                    }
                    '(' => match (i + 2..c.len()).find(|&j| c[j] == ')') {
                        Some(j) => {
                            let name: String = c[i + 2..j].iter().collect();
                            out.push_str(&f(&name).unwrap_or(format!("$({name})")));
                            i = j + 1;
                        }
                        None => {
                            out.push_str("$(");
                            i += 2;
                        }
                    },
                    ch => {
                        out.push('$');
                        out.push(ch);
                        i += 2;
                    }
                }
            } else {
                out.push(c[i]);
                i += 1;
            }
        }
        out
    }

    proptest::proptest! {
        /// With no defined names and no `$$`, expansion is the identity.
        #[test]
        fn identity_without_defined_refs(s in "([a-z$()£中{}\\\\ _]|\\PC){0,40}") {
            proptest::prop_assume!(!s.contains("$$"));
            proptest::prop_assert_eq!(expand(&s, |_| None), s);
        }

        /// Escaping every `$` as `$$` always gives the text back, whatever is defined.
        #[test]
        fn escaped_round_trip(s in "([A-Z$()£中]|\\PC){0,40}") {
            let escaped = s.replace('$', "$$");
            proptest::prop_assert_eq!(expand(&escaped, |n| Some(format!("<{n}>"))), s);
        }

        /// Agrees with an independent char-by-char model of the algorithm.
        #[test]
        fn matches_char_model(s in "([A-C$()£中]|\\PC){0,60}") {
            let lookup = |n: &str| (n.len() % 2 == 0).then(|| n.to_lowercase());
            proptest::prop_assert_eq!(expand(&s, lookup), model(&s, lookup));
        }
    }
}
