//! `upkeep rollout status|resume` and `upkeep status --cluster`: the cluster's
//! view of planned changes, read from (and, for `resume`, written to) etcd
//! through the config's `[cluster]` table. `upkeep rollout apply
//! --without-lock` goes to the local daemon's control socket instead.

use serde_json::{json, Value};
use upkeep_cluster::{clear_halts, read_view, ClientOptions, ClusterView, EtcdClient, Keys};
use upkeep_spec::cluster::ClusterConfig;

use crate::cli::{Output, Paths};
use crate::load::config_only;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The `[cluster]` table and an etcd client for it, or a message and exit code.
fn connect(paths: &Paths) -> Result<(ClusterConfig, EtcdClient), (String, i32)> {
    let (cfg, _) = config_only(paths).map_err(|e| (format!("{e:#}"), 2))?;
    let config = paths
        .config
        .as_ref()
        .map_or_else(|| "the config".to_string(), |p| p.display().to_string());
    let cluster = cfg.cluster.ok_or_else(|| {
        (
            format!("{config} has no [cluster] table: planned changes are not coordinated across masters"),
            2,
        )
    })?;
    let client = EtcdClient::new(&ClientOptions::from_config(&cluster))
        .map_err(|e| (format!("[cluster]: {e}"), 2))?;
    Ok((cluster, client))
}

/// `upkeep rollout status` / `upkeep status --cluster`.
pub fn status(paths: &Paths, output: Output) -> i32 {
    let (cluster, client) = match connect(paths) {
        Ok(x) => x,
        Err((msg, code)) => {
            eprintln!("upkeep: {msg}");
            return code;
        }
    };
    let keys = Keys::new(&cluster.prefix);
    let view = match runtime().block_on(read_view(&client, &keys)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("upkeep: cannot read the cluster view from etcd: {e}");
            return 2;
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&view)).unwrap_or_default()
        ),
        Output::Text => print!("{}", to_text(&view)),
    }
    0
}

/// The view as JSON: `lock_holder`, `masters` (each with `up` and its
/// services), `halts`, `pending`. Names, states and hashes only.
fn to_json(view: &ClusterView) -> Value {
    let masters: Vec<Value> = view
        .masters
        .iter()
        .map(|m| match view.nodes.get(m) {
            Some(rec) => json!({
                "node": m,
                "up": true,
                "services": rec.services.iter().map(|s| json!({
                    "name": s.name,
                    "rollout": s.rollout,
                    "ready": s.ready,
                    "spec_hash": s.spec_hash,
                    "pending_hash": s.pending_hash,
                    "halted": s.halted,
                    "message": s.message,
                })).collect::<Vec<_>>(),
            }),
            None => json!({
                "node": m,
                "up": false,
                "error": view.unreadable.get(m),
                "services": [],
            }),
        })
        .collect();
    json!({
        "lock_holder": view.lock_holder,
        "masters": masters,
        "halts": view.halts.iter().map(|h| json!({
            "service": h.service,
            "hash": h.hash,
            "node": h.node,
            "reason": h.reason,
        })).collect::<Vec<_>>(),
        "pending": view.pending().iter().map(|p| json!({
            "node": p.node,
            "service": p.service,
            "hash": p.hash,
        })).collect::<Vec<_>>(),
    })
}

fn to_text(view: &ClusterView) -> String {
    let mut out = format!(
        "rollout lock: {}\n",
        view.lock_holder.as_deref().unwrap_or("free")
    );
    for m in &view.masters {
        match view.nodes.get(m) {
            None => {
                let why = view
                    .unreadable
                    .get(m)
                    .map_or("its record expired", String::as_str);
                out.push_str(&format!("\nmaster {m}: DOWN ({why})\n"));
            }
            Some(rec) => {
                out.push_str(&format!("\nmaster {m}:\n"));
                out.push_str("  SERVICE                   READY  ROLLOUT    STATE\n");
                for s in &rec.services {
                    let state = if s.halted {
                        format!("halted: {}", s.message.as_deref().unwrap_or(""))
                    } else if s.pending_hash.is_some() {
                        format!("pending: {}", s.message.as_deref().unwrap_or(""))
                    } else {
                        "-".to_string()
                    };
                    let rollout = match s.rollout {
                        upkeep_cluster::Rollout::Serial => "serial",
                        upkeep_cluster::Rollout::Immediate => "immediate",
                    };
                    out.push_str(&format!(
                        "  {:<25} {:<6} {:<10} {}\n",
                        s.name,
                        if s.ready { "yes" } else { "no" },
                        rollout,
                        state
                    ));
                }
            }
        }
    }
    if !view.halts.is_empty() {
        out.push_str("\nhalts (upkeep rollout resume NAME clears them):\n");
        for h in &view.halts {
            out.push_str(&format!("  {} on {}: {}\n", h.service, h.node, h.reason));
        }
    }
    out
}

/// `upkeep rollout resume NAME`: clears every halt of the service.
pub fn resume(paths: &Paths, name: &str) -> i32 {
    let (cluster, client) = match connect(paths) {
        Ok(x) => x,
        Err((msg, code)) => {
            eprintln!("upkeep: {msg}");
            return code;
        }
    };
    let keys = Keys::new(&cluster.prefix);
    match runtime().block_on(clear_halts(&client, &keys, name)) {
        Ok(0) => {
            println!("{name}: no halt to clear");
            0
        }
        Ok(n) => {
            println!("{name}: {n} halt(s) cleared: pending changes of {name} roll again, one master at a time");
            0
        }
        Err(e) => {
            eprintln!("upkeep: cannot clear the halts of {name} in etcd: {e}");
            2
        }
    }
}
