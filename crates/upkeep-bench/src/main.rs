//! `upkeep-bench`: the benchmark command and its workloads. See `--help`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use upkeep_bench::peers::Peer;
use upkeep_bench::report::Report;
use upkeep_bench::scenarios::{self, Opts, SCENARIOS};
use upkeep_bench::stamp::{self, StampMode};

const HELP: &str = "\
upkeep-bench: benchmarks upkeep against monit, supervisord and runit (design.md section 10)

USAGE:
  upkeep-bench all|restart|sigkill|etcd|liveness|manifest|http|idle [OPTIONS]
  upkeep-bench stamp FILE [--exit-after-ms N | --sleep] [--tag T]
  upkeep-bench http-server PORT [--hang-after-ms N] [--stamp FILE] [--tag T]
  upkeep-bench detach PROGRAM [ARGS...]   (monit's start program: fork, setsid, exec; exit 0)

OPTIONS (scenarios):
  --runs N            samples per latency figure (default 30; etcd and liveness use at most 10)
  --quick             a short run: --runs 5 --idle-secs 5 --sizes 10,100 --http-secs 3
  --upkeep PATH|none  the upkeep binary (default: `upkeep` next to this binary)
  --peers LIST        comma-separated: monit,supervisord,runit (default: those installed; `none` for none)
  --out FILE          JSON results (default: upkeep-bench.json next to this binary)
  --idle-secs N       idle window per supervisor and size (default 60)
  --sizes LIST        service counts for idle/start (default 10,100,1000)
  --http-secs N       duration of each endpoint load (default 10)
  --exit-after-ms N   lifetime of the crash-loop workload (default 200)
  --settle-ms N       uptime before each SIGKILL (default 1100: runsv delays runs shorter than 1 s)
  --keep              keep the temp directory (configs, logs, stamps)

Run as root on a quiet machine; every scenario kills what it started.
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            0
        }
        Some("stamp") => cmd_stamp(&args[1..]),
        Some("http-server") => cmd_http_server(&args[1..]),
        Some("detach") => cmd_detach(&args[1..]),
        Some(name) if name == "all" || SCENARIOS.contains(&name) => {
            match cmd_bench(name, &args[1..]) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("upkeep-bench: {e}");
                    2
                }
            }
        }
        Some(other) => {
            eprintln!("upkeep-bench: unknown command {other:?}\n\n{HELP}");
            2
        }
    };
    std::process::exit(code);
}

fn num<T: std::str::FromStr>(flag: &str, v: Option<&String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| format!("{flag}: invalid value {v:?}"))
}

fn cmd_stamp(args: &[String]) -> i32 {
    let mut file = None;
    let mut mode = StampMode::ExitAfter(Duration::ZERO);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--exit-after-ms" => match num::<u64>(a, it.next()) {
                Ok(ms) => mode = StampMode::ExitAfter(Duration::from_millis(ms)),
                Err(e) => return usage_error(&e),
            },
            "--sleep" => mode = StampMode::Sleep,
            "--tag" => {
                it.next();
            }
            f if file.is_none() && !f.starts_with("--") => file = Some(PathBuf::from(f)),
            other => return usage_error(&format!("stamp: unexpected argument {other:?}")),
        }
    }
    match file {
        Some(f) => stamp::run_stamp(&f, mode),
        None => usage_error("stamp: FILE is required"),
    }
}

fn cmd_http_server(args: &[String]) -> i32 {
    let mut port = None;
    let mut hang = None;
    let mut file = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--hang-after-ms" => match num::<u64>(a, it.next()) {
                Ok(ms) => hang = Some(Duration::from_millis(ms)),
                Err(e) => return usage_error(&e),
            },
            "--stamp" => match it.next() {
                Some(f) => file = Some(PathBuf::from(f)),
                None => return usage_error("--stamp needs a FILE"),
            },
            "--tag" => {
                it.next();
            }
            p if port.is_none() => match p.parse::<u16>() {
                Ok(p) => port = Some(p),
                Err(_) => return usage_error(&format!("http-server: invalid PORT {p:?}")),
            },
            other => return usage_error(&format!("http-server: unexpected argument {other:?}")),
        }
    }
    match port {
        Some(p) => stamp::run_http_server(p, hang, file.as_deref()),
        None => usage_error("http-server: PORT is required"),
    }
}

/// Runs `args` in a new session with stdio on /dev/null and returns at once,
/// like a daemon's start script.
fn cmd_detach(args: &[String]) -> i32 {
    if args.is_empty() {
        return usage_error("detach: PROGRAM is required");
    }
    let cargs: Result<Vec<std::ffi::CString>, _> = args
        .iter()
        .map(|a| std::ffi::CString::new(a.as_bytes()))
        .collect();
    let Ok(cargs) = cargs else {
        return usage_error("detach: argument with a NUL byte");
    };
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: this process is single-threaded here; the child only calls
    // async-signal-safe functions (setsid, open, dup2, execv, _exit).
    unsafe {
        match libc::fork() {
            -1 => {
                eprintln!(
                    "upkeep-bench detach: fork: {}",
                    std::io::Error::last_os_error()
                );
                1
            }
            0 => {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    for fd in 0..3 {
                        libc::dup2(null, fd);
                    }
                }
                libc::execv(cargs[0].as_ptr(), argv.as_ptr());
                libc::_exit(127)
            }
            _ => 0,
        }
    }
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("upkeep-bench: {msg}");
    2
}

fn default_upkeep(exe: &Path) -> Result<PathBuf, String> {
    let p = exe.with_file_name("upkeep");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "upkeep binary not found at {}: build it with `cargo build --release -p upkeep` or pass --upkeep PATH",
            p.display()
        ))
    }
}

fn cmd_bench(name: &str, args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut runs = None;
    let mut quick = false;
    let mut upkeep = None;
    let mut peers: Option<Vec<Peer>> = None;
    let mut out = None;
    let mut idle_secs = None;
    let mut sizes = None;
    let mut http_secs = None;
    let mut exit_after_ms = 200;
    let mut settle_ms = 1100;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = Some(num::<usize>(a, it.next())?.max(1)),
            "--quick" => quick = true,
            "--upkeep" => upkeep = Some(it.next().ok_or("--upkeep needs a PATH")?.clone()),
            "--peers" => {
                let v = it.next().ok_or("--peers needs a list")?;
                let mut list = Vec::new();
                for p in v
                    .split(',')
                    .filter(|s| !s.trim().is_empty() && s.trim() != "none")
                {
                    list.push(Peer::parse(p).filter(|p| *p != Peer::Upkeep).ok_or_else(|| {
                        format!("--peers: unknown peer {p:?} (known: monit, supervisord, runit)")
                    })?);
                }
                peers = Some(list);
            }
            "--out" => out = Some(PathBuf::from(it.next().ok_or("--out needs a FILE")?)),
            "--idle-secs" => idle_secs = Some(num::<u64>(a, it.next())?),
            "--sizes" => {
                let v = it.next().ok_or("--sizes needs a list")?;
                sizes = Some(
                    v.split(',')
                        .map(|s| {
                            s.trim()
                                .parse::<usize>()
                                .map_err(|_| format!("--sizes: bad {s:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            "--http-secs" => http_secs = Some(num::<u64>(a, it.next())?.max(1)),
            "--exit-after-ms" => exit_after_ms = num(a, it.next())?,
            "--settle-ms" => settle_ms = num(a, it.next())?,
            "--keep" => keep = true,
            other => return Err(format!("unexpected argument {other:?} (see --help)")),
        }
    }
    let upkeep = match upkeep.as_deref() {
        Some("none") => Err("skipped (--upkeep none)".to_string()),
        Some(p) => {
            let p = PathBuf::from(p);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!("--upkeep {}: no such file", p.display()))
            }
        }
        None => default_upkeep(&exe),
    };
    if let Err(e) = &upkeep {
        eprintln!("[upkeep-bench] warning: {e}; upkeep's cells will say so");
    }
    let peers =
        peers.unwrap_or_else(|| Peer::PEERS.into_iter().filter(|p| p.installed()).collect());
    for p in &peers {
        if !p.installed() {
            return Err(format!(
                "{} is not installed (needs {})",
                p.name(),
                p.binaries().join(", ")
            ));
        }
    }
    // Lots of services need lots of descriptors: raise the soft limit for
    // every supervisor alike.
    raise_nofile();
    let root = make_temp_root()?;
    let opts = Opts {
        runs: runs.unwrap_or(if quick { 5 } else { 30 }),
        upkeep,
        peers,
        idle_secs: idle_secs.unwrap_or(if quick { 5 } else { 60 }),
        sizes: sizes.unwrap_or_else(|| {
            if quick {
                vec![10, 100]
            } else {
                vec![10, 100, 1000]
            }
        }),
        http_secs: http_secs.unwrap_or(if quick { 3 } else { 10 }),
        exit_after_ms,
        settle_ms,
        exe: exe.clone(),
        root: root.clone(),
    };
    let mut rep = Report {
        machine: upkeep_bench::machine_info(opts.upkeep.as_deref().ok()),
        ..Report::default()
    };
    rep.settings = json!({
        "scenario": name, "runs": opts.runs, "quick": quick, "idle_secs": opts.idle_secs,
        "sizes": opts.sizes, "http_secs": opts.http_secs, "exit_after_ms": opts.exit_after_ms,
        "settle_ms": opts.settle_ms,
        "peers": opts.peers.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "upkeep": opts.upkeep.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|e| e.clone()),
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let list: Vec<&str> = if name == "all" {
        SCENARIOS.to_vec()
    } else {
        vec![name]
    };
    let started = std::time::Instant::now();
    let mut result = Ok(());
    for s in list {
        if let Err(e) = scenarios::run(s, &opts, &mut rep) {
            result = Err(e);
            break;
        }
    }
    // Belt and braces: nothing under the root survives.
    upkeep_bench::procfs::sweep(&root);
    if keep {
        eprintln!("[upkeep-bench] kept {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
    result?;
    rep.settings
        .insert("elapsed_s".into(), json!(started.elapsed().as_secs()));
    println!(
        "\nMachine: {}",
        serde_json::Value::Object(rep.machine.clone())
    );
    println!("\n{}", rep.table(&opts.supervisors()));
    let out = out.unwrap_or_else(|| exe.with_file_name("upkeep-bench.json"));
    let text =
        serde_json::to_string_pretty(&rep.to_json()).map_err(|e| format!("encoding JSON: {e}"))?;
    std::fs::write(&out, text + "\n").map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!("JSON: {}", out.display());
    Ok(())
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 20);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn make_temp_root() -> Result<PathBuf, String> {
    let template = std::env::temp_dir().join("upkeep-bench.XXXXXX");
    nix::unistd::mkdtemp(&template).map_err(|e| format!("mkdtemp {}: {e}", template.display()))
}
