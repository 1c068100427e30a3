//! The Prometheus text exposition format (version 0.0.4), written straight
//! into one buffer.
//!
//! `/metrics` used to build `prometheus` crate objects (a protobuf message
//! per sample, four owned label strings each), sort them and encode them:
//! with 100 services that was about 2,700 samples and 40 % of a scrape's
//! CPU. Here a scrape appends each line once and allocates nothing per
//! sample. The format is small (docs/metrics.md has the rules we rely on):
//!
//! ```text
//! # HELP name help text, with \ and newline escaped
//! # TYPE name counter|gauge|histogram
//! name{label="value, with \ " and newline escaped",...} 1.5
//! ```
//!
//! Every sample of a family must follow its `# TYPE` line with no other
//! family in between; [`Text::family`] starts one, and its header is only
//! written when its first sample comes, so a family with no samples leaves
//! no trace (the format has no way to say "none").

use std::fmt::Write as _;

/// What kind of metric a family is (its `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process that counts restarts).
    Counter,
    /// Any value.
    Gauge,
    /// `_bucket{le=...}`, `_sum` and `_count` samples.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family's fixed metadata.
#[derive(Debug)]
pub struct Def {
    /// The metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`, checked by tests).
    pub name: &'static str,
    /// `# HELP` text.
    pub help: &'static str,
    /// `# TYPE`.
    pub kind: Kind,
    /// Label names, in the order their values are passed to [`Text::sample`].
    pub labels: &'static [&'static str],
}

impl Def {
    /// Whether the name and label names are valid in the exposition format
    /// (and no label is reserved: `__` prefixes, or `le` outside histograms).
    pub fn is_valid(&self) -> bool {
        let ident = |s: &str, colon: bool| {
            let mut chars = s.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
        };
        ident(self.name, true)
            && !self.help.is_empty()
            && self.labels.iter().all(|l| {
                ident(l, false)
                    && !l.starts_with("__")
                    && !(*l == "le" && self.kind == Kind::Histogram)
            })
    }
}

/// A `/metrics` body being written.
#[derive(Debug, Default)]
pub struct Text {
    buf: String,
    /// The family whose header is due before its first sample.
    pending: Option<&'static Def>,
    /// The family samples are written for now.
    current: Option<&'static Def>,
}

impl Text {
    /// An empty body with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Text {
            buf: String::with_capacity(bytes),
            pending: None,
            current: None,
        }
    }

    /// Starts family `def`: the samples written next belong to it. Its
    /// header is written with its first sample.
    pub fn family(&mut self, def: &'static Def) {
        self.pending = Some(def);
        self.current = Some(def);
    }

    fn header(&mut self) {
        if let Some(def) = self.pending.take() {
            self.buf.push_str("# HELP ");
            self.buf.push_str(def.name);
            self.buf.push(' ');
            escape_into(&mut self.buf, def.help, false);
            self.buf.push_str("\n# TYPE ");
            self.buf.push_str(def.name);
            self.buf.push(' ');
            self.buf.push_str(def.kind.as_str());
            self.buf.push('\n');
        }
    }

    /// Appends whole families written into another body (each with its
    /// header, as [`Text::as_str`] gives them): the next sample needs a
    /// [`Text::family`] first.
    pub fn append(&mut self, families: &str) {
        self.pending = None;
        self.current = None;
        self.buf.push_str(families);
    }

    /// One sample of the current family, `values` in the order of its
    /// `labels`. A sample written with no family started is a bug and is
    /// dropped (debug builds panic).
    pub fn sample(&mut self, values: &[&str], value: f64) {
        self.line("", values, None, value);
    }

    /// One histogram (`_bucket` per finite bound, `+Inf` from `count`,
    /// `_sum`, `_count`) of the current family: `buckets` are cumulative
    /// `(upper bound, count)` pairs in increasing order.
    pub fn histogram(&mut self, values: &[&str], buckets: &[(f64, u64)], sum: f64, count: u64) {
        let mut bound = String::new();
        for (le, n) in buckets {
            bound.clear();
            float_into(&mut bound, *le);
            #[allow(clippy::cast_precision_loss)] // counts as f64 are what the format carries
            self.line("_bucket", values, Some(&bound), *n as f64);
        }
        #[allow(clippy::cast_precision_loss)]
        {
            self.line("_bucket", values, Some("+Inf"), count as f64);
            self.line("_sum", values, None, sum);
            self.line("_count", values, None, count as f64);
        }
    }

    fn line(&mut self, suffix: &str, values: &[&str], le: Option<&str>, value: f64) {
        let Some(def) = self.current else {
            debug_assert!(false, "sample written outside a family");
            return;
        };
        debug_assert_eq!(def.labels.len(), values.len(), "{}", def.name);
        self.header();
        let b = &mut self.buf;
        b.push_str(def.name);
        b.push_str(suffix);
        if !def.labels.is_empty() || le.is_some() {
            b.push('{');
            let mut first = true;
            for (name, v) in def.labels.iter().zip(values) {
                if !first {
                    b.push(',');
                }
                first = false;
                b.push_str(name);
                b.push_str("=\"");
                escape_into(b, v, true);
                b.push('"');
            }
            if let Some(le) = le {
                if !first {
                    b.push(',');
                }
                b.push_str("le=\"");
                b.push_str(le);
                b.push('"');
            }
            b.push('}');
        }
        b.push(' ');
        float_into(b, value);
        b.push('\n');
    }

    /// The body written so far.
    pub fn as_str(&self) -> &str {
        &self.buf
    }

    /// The finished body, as text.
    pub fn into_string(self) -> String {
        self.buf
    }

    /// The finished body.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf.into_bytes()
    }
}

/// Appends `s` escaped: `\` and newline always, `"` in label values.
fn escape_into(out: &mut String, s: &str, quote: bool) {
    if !s
        .bytes()
        .any(|c| c == b'\\' || c == b'\n' || (quote && c == b'"'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Appends a sample value as Prometheus reads it: the shortest decimal that
/// reads back as the same `f64` (integers without a fraction), `+Inf`,
/// `-Inf`, `NaN`.
fn float_into(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        // Most values are counts, bytes and 0/1 gauges: integers print
        // faster than floats, and the same (2^53 and beyond are left to the
        // float path).
        #[allow(clippy::cast_possible_truncation)]
        int_into(out, v as i64);
    } else {
        // Writing to a String cannot fail.
        let _ = write!(out, "{v}");
    }
}

/// Appends `n` in decimal: a sample is mostly a 0 or a 1 (state gauges),
/// and a digit loop costs less than the formatting machinery per sample.
fn int_into(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut v = n.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        // `v % 10` is below 10: the cast keeps it.
        #[allow(clippy::cast_possible_truncation)]
        {
            digits[i] = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    if let Ok(d) = std::str::from_utf8(&digits[i..]) {
        out.push_str(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Def = Def {
        name: "t_total",
        help: "A \\ test\nwith two lines.",
        kind: Kind::Counter,
        labels: &["service", "reason"],
    };
    const G: Def = Def {
        name: "t_gauge",
        help: "No labels.",
        kind: Kind::Gauge,
        labels: &[],
    };
    const H: Def = Def {
        name: "t_seconds",
        help: "A histogram.",
        kind: Kind::Histogram,
        labels: &["probe"],
    };

    #[test]
    fn writes_headers_once_and_escapes() {
        let mut t = Text::default();
        t.family(&C);
        t.sample(&["a\"b", "x\\y\nz"], 3.0);
        t.sample(&["b", "ok"], 0.25);
        t.family(&G);
        t.sample(&[], f64::INFINITY);
        assert_eq!(
            t.as_str(),
            "# HELP t_total A \\\\ test\\nwith two lines.\n\
             # TYPE t_total counter\n\
             t_total{service=\"a\\\"b\",reason=\"x\\\\y\\nz\"} 3\n\
             t_total{service=\"b\",reason=\"ok\"} 0.25\n\
             # HELP t_gauge No labels.\n\
             # TYPE t_gauge gauge\n\
             t_gauge +Inf\n"
        );
    }

    #[test]
    fn a_family_without_samples_leaves_nothing() {
        let mut t = Text::default();
        t.family(&C);
        t.family(&G);
        t.sample(&[], -0.5);
        t.family(&H);
        assert_eq!(
            t.as_str(),
            "# HELP t_gauge No labels.\n# TYPE t_gauge gauge\nt_gauge -0.5\n"
        );
    }

    #[test]
    fn histogram_lines() {
        let mut t = Text::default();
        t.family(&H);
        t.histogram(&["liveness"], &[(0.005, 1), (0.5, 3)], 0.75, 4);
        assert_eq!(
            t.as_str(),
            "# HELP t_seconds A histogram.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{probe=\"liveness\",le=\"0.005\"} 1\n\
             t_seconds_bucket{probe=\"liveness\",le=\"0.5\"} 3\n\
             t_seconds_bucket{probe=\"liveness\",le=\"+Inf\"} 4\n\
             t_seconds_sum{probe=\"liveness\"} 0.75\n\
             t_seconds_count{probe=\"liveness\"} 4\n"
        );
    }

    #[test]
    fn values_read_back_exactly() {
        for v in [
            0.0,
            1.0,
            98_304.0,
            1_795_980_979.560_163_7,
            1e-9,
            1e21,
            -3.5,
            f64::MAX,
        ] {
            let mut s = String::new();
            float_into(&mut s, v);
            assert_eq!(s.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{s}");
        }
        for n in [0_i64, 1, 9, 10, 42, -7, 1_000_000, i64::MAX, i64::MIN] {
            let mut s = String::new();
            int_into(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        let mut s = String::new();
        float_into(&mut s, -0.0);
        assert_eq!(s, "0", "as before: an integer");
        s.clear();
        float_into(&mut s, f64::NAN);
        assert_eq!(s, "NaN");
        s.clear();
        float_into(&mut s, f64::NEG_INFINITY);
        assert_eq!(s, "-Inf");
    }

    #[test]
    fn definitions_are_checked() {
        assert!(C.is_valid() && G.is_valid() && H.is_valid());
        let bad = |name: &'static str, labels: &'static [&'static str], kind| Def {
            name,
            help: "h",
            kind,
            labels,
        };
        assert!(!bad("1x", &[], Kind::Gauge).is_valid());
        assert!(!bad("a-b", &[], Kind::Gauge).is_valid());
        assert!(!bad("a", &["__x"], Kind::Gauge).is_valid());
        assert!(!bad("a", &["l:x"], Kind::Gauge).is_valid());
        assert!(!bad("a", &["le"], Kind::Histogram).is_valid());
        assert!(bad("a:b", &["le"], Kind::Gauge).is_valid());
    }
}
