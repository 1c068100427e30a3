//! Two services never share a log file or a cgroup (defect 10): the host
//! service `x_y` and the container `y` of pod `x` (service `x/y`) once did,
//! and `upkeep stop x_y` killed the pod's container.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn stopping_host_service_x_y_leaves_container_y_of_pod_x_running() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let host = script(tmp.path(), "host.sh", "echo host-x_y\nexec sleep 1000");
    let pod_y = script(tmp.path(), "pod-y.sh", "echo pod-x-y\nexec sleep 1000");
    let pod_z = script(tmp.path(), "pod-z.sh", "exec sleep 1000");
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  hostNetwork: true\n  containers:\n  - name: y\n    image: i\n    command: [{:?}]\n  - name: z\n    image: i\n    command: [{:?}]\n",
        pod_y.display().to_string(),
        pod_z.display().to_string()
    );
    let mut d = Daemon::start(
        &format!(
            "[services.x_y]\ncommand = [{:?}]\n",
            host.display().to_string()
        ),
        &[("x.yaml", &pod)],
    );
    let host_pid = d.wait_pid("x_y", Duration::from_secs(10), |_| true);
    let pod_pid = d.wait_pid("x/y", Duration::from_secs(10), |_| true);
    assert_ne!(host_pid, pod_pid);

    // Stopping the host service leaves the pod's container alone.
    let out = d.client(&["stop", "x_y"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_service("x_y", Duration::from_secs(10), "stopped", |s| {
        s["state"] == "stopped" && s["pid"].is_null()
    });
    assert!(!pid_alive(host_pid));
    assert!(
        pid_alive(pod_pid),
        "stopping x_y killed container y of pod x"
    );
    assert_eq!(
        d.service("x/y").unwrap()["pid"].as_u64(),
        Some(u64::from(pod_pid))
    );

    // Each wrote its own file.
    let host_log = d.logs.join("x@5fy.log");
    let pod_log = d.logs.join("x_y.log");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    wait_for("both log files", Duration::from_secs(10), || {
        let (h, p) = (read(&host_log)?, read(&pod_log)?);
        (h.contains("host-x_y") && p.contains("pod-x-y")).then_some(())
    });
    assert!(!read(&host_log).unwrap().contains("pod-x-y"));
    assert!(!read(&pod_log).unwrap().contains("host-x_y"));
}
