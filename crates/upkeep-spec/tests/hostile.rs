//! Hostile and broken input: every case is a clean error, fast, with no panic.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cfg, fixtures, has_error, invalid};
use proptest::prelude::*;
use upkeep_spec::config::{self, Overrides};
use upkeep_spec::manifest::{self, FileOutcome};

/// Parses and checks it took less than `limit` times [`LOAD_FACTOR`] (a
/// hang or CPU blow-up fails).
fn timed_parse(text: &[u8], limit: Duration) -> FileOutcome {
    let limit = limit * LOAD_FACTOR;
    let start = Instant::now();
    let out = manifest::parse(text, Path::new("/m/hostile.yaml"), &cfg());
    assert!(start.elapsed() < limit, "took {:?}", start.elapsed());
    out
}

/// Wall-clock limits hold on a machine at load 15 too: the billion laughs
/// took 1.5 s of CPU but 12.6 s of wall clock there (debug build). An
/// expansion that is not refused takes minutes and gigabytes, so the
/// margin still catches it.
const LOAD_FACTOR: u32 = 6;

#[test]
fn billion_laughs_is_refused() {
    let mut doc = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        doc.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    let d = invalid(timed_parse(doc.as_bytes(), Duration::from_secs(10)));
    assert!(has_error(&d, &["invalid YAML"]), "{d:#?}");
    // The same bomb hidden under an unknown field of a real pod is refused too.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: c, image: i, command: [x]}}]\nx-bomb:\n{}",
        doc.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    invalid(timed_parse(pod.as_bytes(), Duration::from_secs(10)));
}

#[test]
fn deep_flow_nesting_is_refused() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let d = invalid(timed_parse(text.as_bytes(), Duration::from_secs(5)));
    assert!(has_error(&d, &["invalid YAML"]), "{d:#?}");
    let text = "{a: ".repeat(100_000);
    invalid(timed_parse(text.as_bytes(), Duration::from_secs(5)));
}

#[test]
fn deep_block_nesting_is_refused() {
    let text = format!("{}x\n", "- ".repeat(100_000));
    let d = invalid(timed_parse(text.as_bytes(), Duration::from_secs(5)));
    assert!(has_error(&d, &["invalid YAML"]), "{d:#?}");
    // Indented block mappings, as deep as a small file allows.
    let mut text = String::new();
    for i in 0..2000 {
        text.push_str(&" ".repeat(i));
        text.push_str("a:\n");
    }
    invalid(timed_parse(text.as_bytes(), Duration::from_secs(5)));
}

#[test]
fn deep_nesting_on_a_small_stack_does_not_overflow() {
    // Parsing runs on tokio blocking threads (2 MiB stacks by default).
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let text = format!("{}x\n", "- ".repeat(100_000));
            matches!(
                timed_parse(text.as_bytes(), Duration::from_secs(5)),
                FileOutcome::Invalid(_)
            )
        })
        .unwrap();
    assert!(handle.join().unwrap());
}

#[test]
fn oversized_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let f = std::fs::File::create(&path).unwrap();
    // Sparse: 1 GiB that would take long to read; the cap is checked on the size first.
    f.set_len(1 << 30).unwrap();
    let start = Instant::now();
    let d = invalid(manifest::load_file(&path, &cfg()));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(has_error(&d, &["10 MiB"]), "{d:#?}");
    // Just over the cap, in memory.
    let text = vec![b'#'; (10 << 20) + 1];
    let d = invalid(timed_parse(&text, Duration::from_secs(5)));
    assert!(has_error(&d, &["10 MiB"]), "{d:#?}");
}

#[test]
fn binary_junk_and_bad_encodings() {
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    invalid(timed_parse(&junk, Duration::from_secs(5)));
    let d = invalid(timed_parse(
        b"apiVersion: v1\nkind: \xff\xfePod\n",
        Duration::from_secs(5),
    ));
    assert!(has_error(&d, &["UTF-8"]), "{d:#?}");
    let d = invalid(timed_parse(b"apiVersion: v1\0\n", Duration::from_secs(5)));
    assert!(has_error(&d, &["NUL"]), "{d:#?}");
    // ELF header.
    invalid(timed_parse(
        b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0",
        Duration::from_secs(5),
    ));
}

#[test]
fn empty_and_trivial_files() {
    for text in [
        "",
        "\n\n",
        "# only a comment\n",
        "---\n",
        "~\n",
        "null\n",
        "42\n",
        "\"str\"\n",
        "[]\n",
        "{}\n",
    ] {
        let d = invalid(timed_parse(text.as_bytes(), Duration::from_secs(5)));
        assert!(!d.is_empty(), "{text:?}");
    }
}

#[test]
fn duplicate_keys_are_refused() {
    let d = invalid(timed_parse(
        b"apiVersion: v1\nkind: Pod\nkind: Pod\n",
        Duration::from_secs(5),
    ));
    assert!(has_error(&d, &["duplicate"]), "{d:#?}");
}

#[test]
fn hostile_config_text() {
    for text in [
        "[".repeat(100_000),
        format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("a = {}", "{b = ".repeat(50_000)),
        "\u{0}\u{1}binary".to_string(),
        "[services.x]\ncommand = [1, 2.5, true, 1979-05-27]\n".to_string(),
    ] {
        let start = Instant::now();
        let (c, d) = config::parse(&text, Path::new("/c.toml"), &Overrides::default());
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(c.is_none() && !d.is_empty());
    }
}

fn fixture_texts() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(fixtures()).unwrap() {
        out.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    out
}

/// Mutations of a fixture: delete, insert or replace a byte range.
fn mutate(text: &str, ops: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for (pos, op, b) in ops {
        if bytes.is_empty() {
            break;
        }
        let i = pos % bytes.len();
        match op % 4 {
            0 => {
                bytes.remove(i);
            }
            1 => bytes.insert(i, *b),
            2 => bytes[i] = *b,
            _ => {
                // Structural characters are the interesting ones.
                let table = b"-:[]{}&*!|>'\"#\n \t?,%@`";
                let pick = table[usize::from(*b) % table.len()];
                bytes.insert(i, pick);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn manifest_parse_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = manifest::parse(&bytes, Path::new("/m/f.yaml"), &cfg());
    }

    #[test]
    fn manifest_parse_never_panics_on_mutated_fixtures(
        which in 0usize..16,
        ops in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12),
    ) {
        let texts = fixture_texts();
        let text = &texts[which % texts.len()];
        let bytes = mutate(text, &ops);
        let out = manifest::parse(&bytes, Path::new("/m/f.yaml"), &cfg());
        // Whatever happens, a valid outcome has services and an invalid one says why.
        match out {
            FileOutcome::Pod(p) => prop_assert!(!p.services.is_empty()),
            FileOutcome::Invalid(d) => prop_assert!(!d.is_empty()),
            FileOutcome::Ignored(_) | FileOutcome::Settling => {
                prop_assert!(false, "parse never ignores or defers")
            }
        }
    }

    #[test]
    fn config_parse_never_panics(text in "(\\PC|\n|\\[|\\]|=|\"|\\{|\\}|,|services\\.|command){0,300}") {
        let (c, d) = config::parse(&text, Path::new("/c.toml"), &Overrides::default());
        prop_assert!(c.is_some() || !d.is_empty());
    }

    #[test]
    fn config_parse_never_panics_on_mutated_example(
        ops in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12),
    ) {
        let base = "node_ip = \"10.0.0.1\"\n[defaults.backoff]\ninitial = \"0s\"\nfactor = 2.0\n[services.a]\ncommand = [\"/a\"]\nafter = [\"b\"]\nliveness = { http = \"http://127.0.0.1:1/x\", period = \"1s\" }\n[services.b]\ncommand = [\"/b\"]\nuser = \"root\"\n";
        let bytes = mutate(base, &ops);
        let text = String::from_utf8_lossy(&bytes);
        let (c, d) = config::parse(&text, Path::new("/c.toml"), &Overrides::default());
        prop_assert!(c.is_some() || !d.is_empty());
    }
}
