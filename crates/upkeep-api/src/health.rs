//! The `/health` JSON (design §7, a contract). The views below list every
//! field they serialize, so a field added to the snapshot for internal use
//! (or by mistake, something from a spec) never reaches a response.

use serde::Serialize;
use std::time::SystemTime;
use upkeep_core::snapshot::{RolloutStatus, ServiceStatus, Snapshot};

/// One service as `/health` shows it.
#[derive(Serialize)]
struct ServiceView<'a> {
    name: &'a str,
    source: &'a str,
    state: &'a str,
    pid: Option<u32>,
    ready: bool,
    live: bool,
    restarts: u64,
    since: &'a str,
    last_exit: Option<LastExitView<'a>>,
    next_start_in_ms: Option<u64>,
    message: &'a str,
}

#[derive(Serialize)]
struct LastExitView<'a> {
    code: Option<i32>,
    signal: Option<&'a str>,
    reason: Option<&'a str>,
    at: &'a str,
}

#[derive(Serialize)]
struct ManifestErrorView<'a> {
    file: &'a str,
    error: &'a str,
}

#[derive(Serialize)]
struct WarningView<'a> {
    file: &'a str,
    warning: &'a str,
}

#[derive(Serialize)]
struct HealthView<'a> {
    status: &'static str,
    services: Vec<ServiceView<'a>>,
    manifest_errors: Vec<ManifestErrorView<'a>>,
    warnings: Vec<WarningView<'a>>,
    /// This node's part in cluster rollouts; only with `[cluster]`. Names
    /// and reasons only.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<&'a RolloutStatus>,
}

/// Milliseconds until the service's next start, computed at `now` from
/// `next_start_at` (0 once it is due). Without `next_start_at` the stored
/// `next_start_in_ms` is passed through.
pub fn next_start_in_ms(status: &ServiceStatus, now: SystemTime) -> Option<u64> {
    match status.next_start_at {
        Some(at) => Some(
            at.duration_since(now)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        ),
        None => status.next_start_in_ms,
    }
}

fn service_view(s: &ServiceStatus, now: SystemTime) -> ServiceView<'_> {
    ServiceView {
        name: &s.name,
        source: &s.source,
        state: &s.state,
        pid: s.pid,
        ready: s.ready,
        live: s.live,
        restarts: s.restarts,
        since: &s.since,
        last_exit: s.last_exit.as_ref().map(|e| LastExitView {
            code: e.code,
            signal: e.signal.as_deref(),
            reason: e.reason.as_deref(),
            at: &e.at,
        }),
        next_start_in_ms: next_start_in_ms(s, now),
        message: &s.message,
    }
}

/// `"ok"` when every service is running and ready, `"starting"` while upkeep
/// has not taken over every service yet (start-up), else `"degraded"`.
pub fn status_word(snapshot: &Snapshot) -> &'static str {
    if snapshot.starting {
        "starting"
    } else if snapshot.healthy() {
        "ok"
    } else {
        "degraded"
    }
}

/// The body of `GET /health`: status, services in name order, manifest errors,
/// host warnings.
pub fn health_json(snapshot: &Snapshot, now: SystemTime) -> Result<Vec<u8>, serde_json::Error> {
    let view = HealthView {
        status: status_word(snapshot),
        // `services` is a BTreeMap keyed by name: values() is in name order.
        services: snapshot
            .services
            .values()
            .map(|s| service_view(s, now))
            .collect(),
        manifest_errors: snapshot
            .manifest_errors
            .iter()
            .map(|e| ManifestErrorView {
                file: &e.file,
                error: &e.error,
            })
            .collect(),
        warnings: snapshot
            .warnings
            .iter()
            .map(|w| WarningView {
                file: &w.file,
                warning: &w.warning,
            })
            .collect(),
        rollout: snapshot.rollout.as_ref(),
    };
    serde_json::to_vec(&view)
}

/// The body of `GET /health/NAME`: the same object as in `services`.
pub fn service_json(status: &ServiceStatus, now: SystemTime) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&service_view(status, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use upkeep_core::snapshot::{LastExit, ManifestError};

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn next_start_is_computed_at_request_time() {
        let mut s = ServiceStatus::new("a", "/x", t(100));
        assert_eq!(next_start_in_ms(&s, t(100)), None);
        s.next_start_at = Some(t(110));
        assert_eq!(next_start_in_ms(&s, t(100)), Some(10_000));
        assert_eq!(next_start_in_ms(&s, t(109)), Some(1_000));
        // Overdue: 0, not negative and not null.
        assert_eq!(next_start_in_ms(&s, t(200)), Some(0));
    }

    #[test]
    fn health_json_has_exactly_the_contract_keys_in_name_order() {
        let mut snap = Snapshot::default();
        let mut b = ServiceStatus::new("b", "/m/b.yaml", t(5));
        b.state = "backoff".into();
        b.last_exit = Some(LastExit {
            code: None,
            signal: Some("SIGKILL".into()),
            reason: Some("OOMKilled".into()),
            at: "x".into(),
        });
        b.next_start_at = Some(t(7));
        snap.services.insert("b".into(), b);
        snap.services
            .insert("a".into(), ServiceStatus::new("a", "/m/a.yaml", t(5)));
        snap.manifest_errors.push(ManifestError {
            file: "f".into(),
            error: "e".into(),
        });
        let v: serde_json::Value =
            serde_json::from_slice(&health_json(&snap, t(6)).unwrap()).unwrap();
        let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(top, ["manifest_errors", "services", "status", "warnings"]);
        assert_eq!(v["status"], "degraded");
        let names: Vec<&str> = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(v["services"][1]["next_start_in_ms"], 1000);
        assert_eq!(
            v["services"][1]["last_exit"],
            serde_json::json!({"code": null, "signal": "SIGKILL", "reason": "OOMKilled", "at": "x"})
        );
        assert_eq!(v["services"][0]["last_exit"], serde_json::Value::Null);
        assert_eq!(
            v["manifest_errors"],
            serde_json::json!([{"file": "f", "error": "e"}])
        );
        assert_eq!(v["warnings"], serde_json::json!([]));
    }

    #[test]
    fn host_warnings_are_listed_and_do_not_degrade() {
        let mut snap = Snapshot::default();
        let mut a = ServiceStatus::new("a", "/m/a.yaml", t(5));
        a.state = "running".into();
        a.ready = true;
        snap.services.insert("a".into(), a);
        snap.warnings.push(upkeep_core::snapshot::HostWarning {
            file: "/var/lib/kubelet/config.yaml".into(),
            warning: "staticPodPath: w".into(),
        });
        let v: serde_json::Value =
            serde_json::from_slice(&health_json(&snap, t(6)).unwrap()).unwrap();
        assert_eq!(v["status"], "ok");
        assert_eq!(
            v["warnings"],
            serde_json::json!([{"file": "/var/lib/kubelet/config.yaml", "warning": "staticPodPath: w"}])
        );
    }
}
