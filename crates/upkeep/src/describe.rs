//! `upkeep events [NAME] [-f]` and `upkeep describe NAME`, like `kubectl get
//! events` and `kubectl describe pod`. Events and output tails are read from
//! the root-only state and log directories (never over HTTP); state and
//! usage from the daemon's `/health` and `/metrics`. Neither prints a
//! service's argv or env: they carry secrets.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use upkeep_core::events::Event;
use upkeep_spec::{ProbeHandler, ServiceSpec};

use crate::cli::{Output, Paths};
use crate::load::{config_only, load_all};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn age(at_ms: u64, now: SystemTime) -> String {
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms);
    upkeep_api::client::human_duration(now.duration_since(at).unwrap_or_default())
}

/// Replaces control characters (terminal escapes) with `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The events table: LAST SEEN, SERVICE, REASON, MESSAGE; newest last.
pub fn events_table(events: &[Event], now: SystemTime, header: bool) -> String {
    let rows: Vec<[String; 4]> = events
        .iter()
        .map(|e| {
            [
                age(e.at_ms, now),
                printable(&e.service),
                printable(&e.reason),
                printable(e.message.lines().next().unwrap_or("")),
            ]
        })
        .collect();
    let head = ["LAST SEEN", "SERVICE", "REASON", "MESSAGE"].map(String::from);
    let mut widths = [0usize; 3];
    for r in std::iter::once(&head).chain(&rows) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let all: Vec<&[String; 4]> = if header {
        std::iter::once(&head).chain(&rows).collect()
    } else {
        rows.iter().collect()
    };
    for r in all {
        let _ = writeln!(
            out,
            "{:<w0$}   {:<w1$}   {:<w2$}   {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    out
}

/// `upkeep events [NAME] [-f] [-o json]`.
pub fn events(paths: &Paths, name: Option<&str>, follow: bool, output: Output) -> i32 {
    let cfg = match config_only(paths) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("upkeep: {e:#}");
            return 2;
        }
    };
    let load = || upkeep_runtime::events::load(&cfg.state_dir, name);
    let mut shown = match load() {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    // The output tails stay for `describe`.
    let strip = |mut e: Event| {
        e.output = None;
        e
    };
    match output {
        Output::Json => {
            let list: Vec<Event> = shown.iter().cloned().map(strip).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            );
            return 0;
        }
        Output::Text => print!("{}", events_table(&shown, SystemTime::now(), true)),
    }
    if !follow {
        return 0;
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(now) = load() else { continue };
        let fresh: Vec<Event> = now
            .into_iter()
            .filter(|e| !shown.contains(e))
            .filter(|e| shown.last().is_none_or(|l| e.at_ms >= l.at_ms))
            .collect();
        if !fresh.is_empty() {
            print!("{}", events_table(&fresh, SystemTime::now(), false));
            shown.extend(fresh);
            let from = shown.len().saturating_sub(1000);
            shown.drain(..from);
        }
    }
}

/// A probe in words, without an exec probe's arguments.
fn probe_text(h: &ProbeHandler) -> String {
    match h {
        ProbeHandler::Http {
            scheme,
            host,
            port,
            path,
            ..
        } => format!(
            "{}://{host}:{port}{path}",
            if *scheme == upkeep_spec::Scheme::Https {
                "https"
            } else {
                "http"
            }
        ),
        ProbeHandler::HttpUnix { socket, path } => {
            format!("http+unix {}{path}", socket.display())
        }
        ProbeHandler::Tcp { host, port } => format!("tcp {host}:{port}"),
        ProbeHandler::Exec { argv } => format!(
            "exec {} (arguments not shown)",
            argv.first().map(String::as_str).unwrap_or("?")
        ),
        ProbeHandler::Unresolved { reason } => format!("unresolved ({reason})"),
    }
}

/// The cgroup2 path of `pid`, from `/proc/PID/cgroup`.
fn cgroup_of(pid: u64) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The `describe` text from its parts (pure, for tests).
pub fn describe_text(
    health: &serde_json::Value,
    spec: Option<&ServiceSpec>,
    usage: &[(String, String)],
    events: &[Event],
    now: SystemTime,
) -> String {
    let mut o = String::new();
    let f = |k: &str| match &health[k] {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) if s.is_empty() => "-".to_string(),
        serde_json::Value::String(s) => printable(s),
        v => v.to_string(),
    };
    let _ = writeln!(o, "Name:          {}", f("name"));
    let _ = writeln!(o, "Source:        {}", f("source"));
    let _ = writeln!(o, "State:         {} since {}", f("state"), f("since"));
    let _ = writeln!(o, "Ready:         {}", f("ready"));
    let _ = writeln!(o, "Live:          {}", f("live"));
    let _ = writeln!(o, "Restarts:      {}", f("restarts"));
    let _ = writeln!(o, "Pid:           {}", f("pid"));
    let cg = health["pid"].as_u64().and_then(cgroup_of);
    let _ = writeln!(o, "Cgroup:        {}", cg.as_deref().unwrap_or("-"));
    let _ = writeln!(o, "Message:       {}", f("message"));
    if let Some(ms) = health["next_start_in_ms"].as_u64() {
        let _ = writeln!(
            o,
            "Next start in: {}",
            upkeep_api::client::human_duration(Duration::from_millis(ms))
        );
    }
    let le = &health["last_exit"];
    if !le.is_null() {
        let _ = writeln!(
            o,
            "Last exit:     code {} signal {} reason {} at {}",
            le["code"], le["signal"], le["reason"], le["at"]
        );
    }
    if let Some(s) = spec {
        let _ = writeln!(
            o,
            "Restart:       {}",
            crate::render::config_word(&s.restart)
        );
        let _ = writeln!(
            o,
            "Limits:        {}",
            crate::render::limits_text(&s.resources)
        );
    }
    let _ = writeln!(o, "Usage:");
    if usage.is_empty() {
        let _ = writeln!(o, "  (none: no running process, or /metrics unreachable)");
    }
    for (k, v) in usage {
        let _ = writeln!(o, "  {k:<48} {v}");
    }
    let _ = writeln!(o, "Probes:");
    let last_probe = |kind: &str| {
        events
            .iter()
            .rev()
            .find(|e| e.message.starts_with(&format!("{kind} probe")))
            .map(|e| format!("{} ({} ago)", printable(&e.message), age(e.at_ms, now)))
    };
    match spec {
        Some(s) => {
            for (kind, p) in [
                ("liveness", &s.probes.liveness),
                ("readiness", &s.probes.readiness),
                ("startup", &s.probes.startup),
            ] {
                if let Some(p) = p {
                    let _ = writeln!(
                        o,
                        "  {kind:<10} {} every {} timeout {} failure {}",
                        probe_text(&p.handler),
                        upkeep_spec::duration::format(p.period),
                        upkeep_spec::duration::format(p.timeout),
                        p.failure_threshold
                    );
                    let _ = writeln!(
                        o,
                        "             last transition: {}",
                        last_probe(kind).unwrap_or_else(|| "none recorded".into())
                    );
                }
            }
        }
        None => {
            let _ = writeln!(o, "  (spec not loadable here)");
        }
    }
    let _ = writeln!(o, "Last exits:");
    let exits: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason == "Exited" || e.reason == "OOMKilled")
        .collect();
    if exits.is_empty() {
        let _ = writeln!(o, "  (none recorded)");
    }
    for e in exits.iter().rev().take(3).rev() {
        let _ = writeln!(
            o,
            "  {} ago  {}: {}",
            age(e.at_ms, now),
            e.reason,
            printable(&e.message)
        );
        match &e.output {
            Some(out) => {
                let _ = writeln!(o, "    output at that moment:");
                for l in out.lines() {
                    let _ = writeln!(o, "      | {}", printable(l));
                }
            }
            None => {
                let _ = writeln!(o, "    (no output captured)");
            }
        }
    }
    let _ = writeln!(o, "Events:");
    let recent = &events[events.len().saturating_sub(15)..];
    if recent.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for line in events_table(recent, now, true).lines() {
        let _ = writeln!(o, "  {line}");
    }
    o
}

/// The usage figures of `name` from a `/metrics` body, in words.
fn usage_rows(metrics: &str, name: &str) -> Vec<(String, String)> {
    let want = format!("service=\"{name}\"");
    let mut rows = Vec::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("container_") else {
            continue;
        };
        let Some((family, tail)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = tail.rsplit_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == want) {
            continue;
        }
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let shown = if family.contains("bytes") || family == "memory_rss" {
            format!("{:.1} MiB", v / 1_048_576.0)
        } else {
            format!("{v}")
        };
        rows.push((format!("container_{family}"), shown));
    }
    rows
}

/// `upkeep describe NAME`.
pub fn describe(paths: &Paths, name: &str) -> i32 {
    let cfg = match config_only(paths) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("upkeep: {e:#}");
            return 2;
        }
    };
    let rt = runtime();
    let (health, metrics) = rt.block_on(async {
        (
            upkeep_api::client::fetch_health(&cfg.listen, Some(name)).await,
            upkeep_api::client::fetch_metrics(&cfg.listen).await,
        )
    });
    let loaded = load_all(paths);
    let health = match health {
        Ok((404, _)) => {
            let known: Vec<&str> = loaded.services.iter().map(|s| s.name.as_str()).collect();
            eprintln!(
                "upkeep: no service named {name:?} (known: {})",
                known.join(", ")
            );
            return 1;
        }
        Ok((_, body)) => body,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return 2;
        }
    };
    let spec = loaded.services.iter().find(|s| s.name == name);
    let usage = metrics.map(|m| usage_rows(&m, name)).unwrap_or_default();
    let events = match upkeep_runtime::events::load(&cfg.state_dir, Some(name)) {
        Ok(ev) => ev,
        Err(e) => {
            eprintln!("upkeep: {e}");
            Vec::new()
        }
    };
    print!(
        "{}",
        describe_text(&health, spec, &usage, &events, SystemTime::now())
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_table_is_aligned_newest_last() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let ev = |at: u64, svc: &str, reason: &str, msg: &str| Event {
            at_ms: at * 1000,
            service: svc.into(),
            reason: reason.into(),
            message: msg.into(),
            output: None,
        };
        let out = events_table(
            &[
                ev(900, "etcd", "Started", "started, pid 1"),
                ev(990, "kube-apiserver", "OOMKilled", "killed\nsecond line"),
            ],
            now,
            true,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("LAST SEEN"));
        assert!(lines[1].starts_with("1m40s"), "{out}");
        assert!(lines[2].starts_with("10s"));
        assert_eq!(lines[1].find("Started"), lines[2].find("OOMKilled"));
        assert!(!out.contains("second line"));
    }

    #[test]
    fn usage_rows_pick_the_service() {
        let m = "container_memory_working_set_bytes{container=\"a\",pod=\"\",namespace=\"\",service=\"a\"} 1048576\n\
                 container_cpu_usage_seconds_total{container=\"b\",pod=\"\",namespace=\"\",service=\"b\"} 3\n";
        assert_eq!(
            usage_rows(m, "a"),
            [(
                "container_memory_working_set_bytes".to_string(),
                "1.0 MiB".to_string()
            )]
        );
    }
}
