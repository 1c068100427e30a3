//! One injective mapping from a service name to a single safe path component,
//! shared by every place that turns a name into a file or directory name (the
//! service's cgroup directory, its log file).
//!
//! Two different service names must never share a log file or a cgroup: a
//! host service `x_y` and the container `y` of pod `x` (service `x/y`) once
//! did, and `upkeep stop x_y` killed the pod's container. So the mapping is a
//! prefix-free code that can be decoded again:
//!
//! - `[A-Za-z0-9.:-]` stand for themselves;
//! - `/` (the separator of `pod/container`) becomes `_`;
//! - every other byte, `_` and `@` included, becomes `@` and two lower-case hex
//!   digits (`x_y` gives `x@5fy`, a space `@20`);
//! - a leading `.` becomes `@2e`, so the component is never `.`, `..` or a
//!   hidden file, and a leading `<controller>.` (`memory.max`, `cgroup.procs`:
//!   names the kernel keeps for its own files in a cgroup directory) has its
//!   first byte escaped the same way;
//! - the empty name becomes `@` (no other name gives a lone `@`).
//!
//! A component longer than [`MAX_COMPONENT`] bytes is cut at a token boundary
//! to make room, and `@@` plus the FNV-1a 128 hash of the whole name is
//! appended. `@@` never occurs in an uncut component (an `@` is always
//! followed by two hex digits), so a cut name cannot equal an uncut one, and
//! two cut names are equal only if their 128-bit hashes are. Service names
//! come from root-owned files, so a deliberately built hash collision is not a
//! concern here.
//!
//! The common names keep their old form: `kube-apiserver` stays
//! `kube-apiserver`, and `etcd-node1/etcd` stays `etcd-node1_etcd`.

use crate::hash::fnv1a_128_hex;

/// The longest component [`path_component`] returns, in bytes. With `.log`
/// appended it stays well under the 255-byte file name limit of Linux
/// file systems.
pub const MAX_COMPONENT: usize = 200;

/// Cgroup v2 and v1 controller names: a cgroup directory `<name>.<anything>`
/// would be read as one of the kernel's control files.
const RESERVED_PREFIXES: [&str; 12] = [
    "cgroup", "cpu", "cpuset", "memory", "io", "pids", "rdma", "hugetlb", "misc", "irq", "cpuacct",
    "blkio",
];

/// Maps a service name to one path component, injectively (see the module
/// documentation for the scheme): distinct names give distinct components,
/// and the result is never empty, `.`, `..`, hidden, longer than
/// [`MAX_COMPONENT`], or made of anything but `[A-Za-z0-9._:@-]`.
pub fn path_component(name: &str) -> String {
    if name.is_empty() {
        return "@".to_string();
    }
    let escape_first = name.starts_with('.')
        || name
            .split_once('.')
            .is_some_and(|(head, _)| RESERVED_PREFIXES.contains(&head));
    // Tokens, so a cut never splits an escape.
    let mut out = String::with_capacity(name.len());
    let mut boundaries = Vec::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        boundaries.push(out.len());
        match b {
            _ if i == 0 && escape_first => push_escaped(&mut out, b),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b':' | b'-' => out.push(char::from(b)),
            b'/' => out.push('_'),
            _ => push_escaped(&mut out, b),
        }
    }
    if out.len() <= MAX_COMPONENT {
        return out;
    }
    let hash = fnv1a_128_hex(name.as_bytes());
    let room = MAX_COMPONENT - 2 - hash.len();
    let cut = boundaries
        .iter()
        .copied()
        .take_while(|&at| at <= room)
        .last()
        .unwrap_or(0);
    out.truncate(cut);
    out.push_str("@@");
    out.push_str(&hash);
    out
}

/// Inverts [`path_component`]: the service name a component stands for, or
/// `None` for a component that was cut (a long name, ending in `@@<hash>`)
/// or that no name maps to.
pub fn decode_component(c: &str) -> Option<String> {
    if c == "@" {
        return Some(String::new());
    }
    let b = c.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' => out.push(b'/'),
            b'@' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                if !hex
                    .bytes()
                    .all(|h| h.is_ascii_digit() || (b'a'..=b'f').contains(&h))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            x => out.push(x),
        }
        i += 1;
    }
    let name = String::from_utf8(out).ok()?;
    (path_component(&name) == c).then_some(name)
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('@');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_names_keep_their_form() {
        assert_eq!(path_component("kube-apiserver"), "kube-apiserver");
        assert_eq!(path_component("etcd-node1/etcd"), "etcd-node1_etcd");
        assert_eq!(
            path_component("etcd-node1.example.com"),
            "etcd-node1.example.com"
        );
    }

    #[test]
    fn host_underscore_and_pod_slash_differ() {
        assert_eq!(path_component("x_y"), "x@5fy");
        assert_eq!(path_component("x/y"), "x_y");
        assert_ne!(path_component("x_y"), path_component("x/y"));
    }

    #[test]
    fn never_leaves_its_directory() {
        assert_eq!(path_component(""), "@");
        assert_eq!(path_component("."), "@2e");
        assert_eq!(path_component(".."), "@2e.");
        assert_eq!(path_component(".hidden"), "@2ehidden");
        assert_eq!(path_component("../../etc/passwd"), "@2e._.._etc_passwd");
        assert_eq!(path_component("a b\n"), "a@20b@0a");
    }

    #[test]
    fn kernel_file_names_are_escaped() {
        assert_eq!(path_component("memory.max"), "@6demory.max");
        assert_eq!(path_component("cgroup.procs"), "@63group.procs");
        assert_eq!(path_component("memoryd.max"), "memoryd.max");
    }

    #[test]
    fn long_names_get_a_hash_instead_of_a_cut() {
        let a = "x".repeat(500);
        let b = format!("{}y", "x".repeat(499));
        let (ca, cb) = (path_component(&a), path_component(&b));
        assert_eq!(ca.len(), MAX_COMPONENT);
        assert!(ca.contains("@@"));
        assert_ne!(ca, cb);
        // An escape is never split by the cut.
        let c = path_component(&"_".repeat(100));
        assert!(c.len() <= MAX_COMPONENT);
        let head = c.split("@@").next().unwrap();
        assert!(decode_component(head).is_some(), "{head}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn injective_on_arbitrary_pairs(a in ".{0,80}", b in ".{0,80}") {
            if a != b {
                prop_assert_ne!(path_component(&a), path_component(&b));
            }
        }

        #[test]
        fn injective_on_confusable_alphabet(a in "[a-c._/@:-]{0,12}", b in "[a-c._/@:-]{0,12}") {
            if a != b {
                prop_assert_ne!(path_component(&a), path_component(&b));
            }
        }

        #[test]
        fn uncut_components_decode_to_the_name(name in ".{0,80}") {
            let c = path_component(&name);
            if !c.contains("@@") {
                prop_assert_eq!(decode_component(&c), Some(name));
            }
        }

        #[test]
        fn always_one_safe_component(name in ".{0,400}") {
            let c = path_component(&name);
            prop_assert!(!c.is_empty() && c.len() <= MAX_COMPONENT);
            prop_assert!(c != "." && c != ".." && !c.starts_with('.'));
            prop_assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b)));
            if let Some((head, _)) = c.split_once('.') {
                prop_assert!(!RESERVED_PREFIXES.contains(&head));
            }
        }

        #[test]
        fn long_names_stay_distinct(stem in "[a-z_/]{190,260}", a in "[a-z]{1,4}", b in "[a-z]{1,4}") {
            let (na, nb) = (format!("{stem}{a}"), format!("{stem}{b}"));
            if na != nb {
                prop_assert_ne!(path_component(&na), path_component(&nb));
            }
        }
    }
}
