//! Results: figures per supervisor, the text table and the JSON document.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::peers::Peer;
use crate::stats::ratio;

/// One supervisor's result for one figure.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cell {
    /// The number shown in the table (`None`: not measured, see `note`).
    pub value: Option<f64>,
    /// Why there is no value, or a caveat ("3/30 runs timed out").
    pub note: Option<String>,
    /// Full detail for the JSON (percentiles, counts).
    pub detail: Value,
}

impl Cell {
    /// A measured value.
    pub fn value(v: f64) -> Cell {
        Cell {
            value: Some(v),
            note: None,
            detail: Value::Null,
        }
    }

    /// A measured value with detail.
    pub fn with_detail(v: f64, detail: Value) -> Cell {
        Cell {
            value: Some(v),
            note: None,
            detail,
        }
    }

    /// Not measured, and why ("n/a: no HTTP probes", "failed: ...").
    pub fn missing(note: impl Into<String>) -> Cell {
        Cell {
            value: None,
            note: Some(note.into()),
            detail: Value::Null,
        }
    }

    /// Adds a caveat.
    pub fn noted(mut self, note: Option<String>) -> Cell {
        self.note = note;
        self
    }
}

/// One row of the table: a measured quantity, lower is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Stable id for the JSON (`restart_p50`).
    pub id: String,
    /// Row label.
    pub title: String,
    /// Unit of the values.
    pub unit: String,
    /// design.md section 10 target for upkeep, if any.
    pub target: Option<String>,
    /// Results by supervisor.
    pub cells: BTreeMap<Peer, Cell>,
}

impl Figure {
    /// An empty figure.
    pub fn new(id: &str, title: &str, unit: &str, target: Option<&str>) -> Figure {
        Figure {
            id: id.into(),
            title: title.into(),
            unit: unit.into(),
            target: target.map(Into::into),
            cells: BTreeMap::new(),
        }
    }
}

/// Everything one bench run produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The figures, in scenario order.
    pub figures: Vec<Figure>,
    /// Machine and versions.
    pub machine: Map<String, Value>,
    /// The options used.
    pub settings: Map<String, Value>,
}

/// Formats a number with precision suited to its size.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a < 10.0 {
        format!("{v:.2}")
    } else if a < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

impl Report {
    /// The text table: figure | upkeep | each peer | each peer/upkeep ratio,
    /// then the notes of cells that have one.
    pub fn table(&self, sups: &[Peer]) -> String {
        let peers: Vec<Peer> = sups
            .iter()
            .copied()
            .filter(|p| *p != Peer::Upkeep)
            .collect();
        let mut header = vec!["figure".to_string(), "unit".into()];
        header.extend(sups.iter().map(|p| p.name().to_string()));
        header.extend(peers.iter().map(|p| format!("{}/upkeep", p.name())));
        header.push("target (upkeep)".into());
        let mut rows = vec![header];
        let mut notes = Vec::new();
        for f in &self.figures {
            let mut row = vec![f.title.clone(), f.unit.clone()];
            for p in sups {
                let cell = f.cells.get(p);
                let text = match cell {
                    Some(Cell {
                        value: Some(v),
                        note,
                        ..
                    }) => {
                        if note.is_some() {
                            format!("{}*", fmt_num(*v))
                        } else {
                            fmt_num(*v)
                        }
                    }
                    Some(Cell {
                        value: None, note, ..
                    }) => {
                        if note.as_deref().is_some_and(|n| n.starts_with("n/a")) {
                            "n/a".into()
                        } else {
                            "FAIL".into()
                        }
                    }
                    None => "-".into(),
                };
                if let Some(Cell { note: Some(n), .. }) =
                    cell.filter(|c| !c.note.as_deref().is_some_and(|n| n.starts_with("n/a")))
                {
                    notes.push(format!("{} / {}: {}", f.title, p.name(), n));
                }
                row.push(text);
            }
            let up = f.cells.get(&Peer::Upkeep).and_then(|c| c.value);
            for p in &peers {
                let r = match (f.cells.get(p).and_then(|c| c.value), up) {
                    (Some(v), Some(u)) => ratio(v, u).map(|r| {
                        if r >= 10.0 {
                            format!("{r:.0}x")
                        } else {
                            format!("{r:.2}x")
                        }
                    }),
                    _ => None,
                };
                row.push(r.unwrap_or_else(|| "-".into()));
            }
            row.push(f.target.clone().unwrap_or_default());
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (n, r) in rows.iter().enumerate() {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "| {} |", line.join(" | "));
            if n == 0 {
                let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "| {} |", sep.join(" | "));
            }
        }
        if !notes.is_empty() {
            out.push_str(
                "\nNotes (* = value with a caveat; n/a = the peer has no such feature):\n",
            );
            for n in notes {
                let _ = writeln!(out, "- {}", n.replace('\n', "\n    "));
            }
        }
        out
    }

    /// The JSON document.
    pub fn to_json(&self) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                let cells: Map<String, Value> = f
                    .cells
                    .iter()
                    .map(|(p, c)| {
                        (p.name().to_string(), json!({"value": c.value, "note": c.note, "detail": c.detail}))
                    })
                    .collect();
                json!({"id": f.id, "title": f.title, "unit": f.unit, "target": f.target, "results": cells})
            })
            .collect();
        json!({"machine": self.machine, "settings": self.settings, "figures": figures})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(1.234), "1.23");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1234.5), "1234");
    }

    #[test]
    fn table_and_json() {
        let mut f = Figure::new("restart_p50", "crash -> restart p50", "ms", Some("<= 2 ms"));
        f.cells.insert(Peer::Upkeep, Cell::value(2.0));
        f.cells.insert(
            Peer::Runit,
            Cell::value(1000.0).noted(Some("runsv waits 1 s".into())),
        );
        f.cells
            .insert(Peer::Monit, Cell::missing("n/a: no such thing"));
        f.cells
            .insert(Peer::Supervisord, Cell::missing("failed: boom"));
        let r = Report {
            figures: vec![f],
            ..Report::default()
        };
        let sups = [Peer::Upkeep, Peer::Monit, Peer::Supervisord, Peer::Runit];
        let t = r.table(&sups);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("| figure"));
        assert!(lines[0].contains("runit/upkeep"));
        assert!(lines[2].contains("| 2.00 "));
        assert!(lines[2].contains("| n/a "));
        assert!(lines[2].contains("| FAIL "));
        assert!(lines[2].contains("| 1000* "));
        assert!(lines[2].contains("| 500x "));
        assert!(t.contains("runit: runsv waits 1 s"));
        assert!(t.contains("supervisord: failed: boom"));
        assert!(
            !t.contains("no such thing"),
            "n/a cells are not repeated as notes"
        );
        let j = r.to_json();
        assert_eq!(j["figures"][0]["results"]["upkeep"]["value"], 2.0);
        assert_eq!(
            j["figures"][0]["results"]["monit"]["note"],
            "n/a: no such thing"
        );
    }
}
