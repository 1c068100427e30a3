//! The kubelet's `$(VAR)` expansion (`third_party/forked/golang/expansion`).

/// Expands `$(NAME)` references in `input` using `lookup`, with the kubelet's
/// exact rules: `$$` is a literal `$`, unknown names stay verbatim, no recursion,
/// a `$` followed by anything else is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let _ = (input, lookup);
    todo!("expansion")
}
