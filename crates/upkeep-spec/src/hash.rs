//! Stable content hashes (FNV-1a 128, as the kubelet uses for static pod UIDs).

use crate::types::ServiceSpec;

const FNV128_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const FNV128_PRIME: u128 = 0x0000000001000000000000000000013B;

/// FNV-1a 128 of `bytes`, as 32 lower-case hex digits.
pub fn fnv1a_128_hex(bytes: &[u8]) -> String {
    let mut h = FNV128_OFFSET;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(FNV128_PRIME);
    }
    format!("{h:032x}")
}

/// The content hash of a resolved spec: FNV-1a 128 over its JSON form with
/// `hash` blanked. Equal hashes mean nothing to restart.
pub fn spec_hash(spec: &ServiceSpec) -> String {
    let mut blank = spec.clone();
    blank.hash = String::new();
    // Serializing plain data (maps are BTreeMaps) cannot fail; fall back to Debug anyway.
    let text = serde_json::to_string(&blank).unwrap_or_else(|_| format!("{blank:?}"));
    fnv1a_128_hex(text.as_bytes())
}

/// The hash of what a spec *executes*: argv, environment, working directory,
/// user and group, volumes, limits, kill mode and where the output goes.
/// A change of any of these replaces the process; every other field
/// (restart policy, backoff, probes, stop signal and grace, preStop,
/// `after`) is supervision policy and applies to the running process.
pub fn exec_hash(spec: &ServiceSpec) -> String {
    exec_hash_with(spec, serde_json::json!(spec.volumes))
}

fn exec_hash_with(spec: &ServiceSpec, volumes: serde_json::Value) -> String {
    let v = serde_json::json!({
        "argv": spec.argv,
        "env": spec.env,
        "working_dir": spec.working_dir,
        "uid": spec.uid,
        "gid": spec.gid,
        "volumes": volumes,
        "resources": spec.resources,
        "kill_mode": spec.kill_mode,
        "log": spec.log,
    });
    fnv1a_128_hex(v.to_string().as_bytes())
}

/// True if a process recorded with exec hash `recorded` runs what `spec`
/// executes: [`exec_hash`], or the exec hash an upkeep that ignored
/// `readOnly` and `mountPropagation` gave the same spec. So an upgrade of
/// upkeep replaces no process (kubeadm's manifests mount read-only at
/// their own path); the next start of each process enforces `readOnly`.
/// A spec that mounts anywhere else than its own path has no such older
/// hash (an older upkeep refused it).
pub fn exec_hash_matches(recorded: &str, spec: &ServiceSpec) -> bool {
    if recorded == exec_hash(spec) {
        return true;
    }
    if spec.volumes.iter().any(|v| v.mount_path.is_some()) {
        return false;
    }
    let before: Vec<serde_json::Value> = spec
        .volumes
        .iter()
        .map(|v| serde_json::json!({ "path": v.path, "kind": v.kind }))
        .collect();
    recorded == exec_hash_with(spec, serde_json::json!(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // Reference values of FNV-1a 128.
        assert_eq!(fnv1a_128_hex(b""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(fnv1a_128_hex(b"a"), "d228cb696f1a8caf78912b704e4a8964");
    }
}
