//! The CPU and MEMORY columns of `upkeep status`, like `kubectl top`: read
//! from `/metrics` (`container_cpu_usage_seconds_total`,
//! `container_memory_working_set_bytes`), CPU as a rate between two reads.

use std::collections::BTreeMap;
use std::time::Instant;

/// One read of every service's cumulative CPU and working set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSample {
    /// When it was read.
    pub at: Option<Instant>,
    /// CPU seconds by service.
    pub cpu: BTreeMap<String, f64>,
    /// Working set bytes by service.
    pub memory: BTreeMap<String, f64>,
}

/// The `service` label and value of a sample line of `family`.
fn service_value<'a>(line: &'a str, family: &str) -> Option<(&'a str, f64)> {
    let rest = line.strip_prefix(family)?.strip_prefix('{')?;
    let (labels, value) = rest.rsplit_once("} ")?;
    let start = labels.find("service=\"")? + "service=\"".len();
    let end = labels[start..].find('"')? + start;
    Some((&labels[start..end], value.trim().parse().ok()?))
}

/// Parses the usage families out of a `/metrics` body read at `at`.
pub fn parse_usage(metrics: &str, at: Instant) -> UsageSample {
    let mut s = UsageSample {
        at: Some(at),
        ..UsageSample::default()
    };
    for line in metrics.lines() {
        if let Some((svc, v)) = service_value(line, "container_cpu_usage_seconds_total") {
            s.cpu.insert(svc.to_string(), v);
        } else if let Some((svc, v)) = service_value(line, "container_memory_working_set_bytes") {
            s.memory.insert(svc.to_string(), v);
        }
    }
    s
}

/// The CPU and MEMORY cells of each service: CPU in millicores over the
/// time between `before` and `after` (`-` without two reads of a process),
/// memory in `Mi` as `kubectl top` prints it.
pub fn cells(before: &UsageSample, after: &UsageSample) -> BTreeMap<String, (String, String)> {
    let dt = match (before.at, after.at) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let mut out = BTreeMap::new();
    let names = after.cpu.keys().chain(after.memory.keys());
    for name in names {
        let cpu = match (before.cpu.get(name), after.cpu.get(name)) {
            (Some(a), Some(b)) if dt > 0.0 && b >= a => format!("{:.0}m", (b - a) / dt * 1000.0),
            _ => "-".to_string(),
        };
        let mem = after
            .memory
            .get(name)
            .map_or("-".to_string(), |b| format!("{:.0}Mi", b / 1_048_576.0));
        out.insert(name.clone(), (cpu, mem));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_and_memory() {
        let t0 = Instant::now();
        let m1 = "# HELP x\ncontainer_cpu_usage_seconds_total{container=\"a\",pod=\"\",namespace=\"\",service=\"a\"} 10\n\
                  container_memory_working_set_bytes{container=\"a\",pod=\"\",namespace=\"\",service=\"a\"} 104857600\n";
        let m2 = "container_cpu_usage_seconds_total{container=\"a\",pod=\"\",namespace=\"\",service=\"a\"} 10.5\n\
                  container_memory_working_set_bytes{container=\"a\",pod=\"\",namespace=\"\",service=\"a\"} 209715200\n";
        let a = parse_usage(m1, t0);
        let b = parse_usage(m2, t0 + Duration::from_secs(2));
        let c = cells(&a, &b);
        assert_eq!(c["a"], ("250m".to_string(), "200Mi".to_string()));
        // One read only: no CPU rate yet.
        let c = cells(&UsageSample::default(), &b);
        assert_eq!(c["a"].0, "-");
    }
}
