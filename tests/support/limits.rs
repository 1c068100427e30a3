//! A process's open-files limit, as the kernel reports it (shared by the
//! test crates through `#[path]`).

/// (soft, hard) "Max open files" of a process, from `/proc/PID/limits`.
pub fn nofile_of(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/limits: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line in /proc/{pid}/limits:\n{text}"));
    let w: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (w[0].parse().unwrap(), w[1].parse().unwrap())
}
