//! The gate before each planned step: may this master restart its changed
//! services now, or why not. A pure function of what was read from etcd;
//! no I/O, no clock.
//!
//! A step may go when all of these hold (every failing one is reported):
//! - no other node holds the rollout lock;
//! - none of this node's pending changes is halted (by any master);
//! - every other known master has a live record whose serial services are
//!   all ready (a master whose record expired counts as down);
//! - etcd has no alarm raised and no learner being promoted;
//! - etcd keeps quorum with this master's member down too: healthy voting
//!   members − 1 ≥ quorum (quorum = voters/2 + 1) when this master hosts a
//!   healthy voting member; when it hosts none, or its member is already
//!   unhealthy, stopping it costs nothing more and healthy ≥ quorum suffices.

use std::collections::BTreeSet;
use std::fmt;

use crate::client::{Alarm, Member, MemberHealth};
use crate::records::{ClusterView, Rollout};

/// What the gate looks at.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    /// The cluster view from etcd.
    pub view: &'a ClusterView,
    /// This master's node name.
    pub node: &'a str,
    /// This node's pending changes: (service, spec hash).
    pub pending: &'a [(String, String)],
    /// The etcd member this master hosts, if any (see [`local_member`]).
    pub local_member: Option<u64>,
    /// etcd's members.
    pub members: &'a [Member],
    /// Health of each member (a member missing here counts as unhealthy).
    pub health: &'a [MemberHealth],
    /// Raised alarms.
    pub alarms: &'a [Alarm],
}

/// Why a step must wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// Another master holds the rollout lock.
    LockHeld {
        /// Its node name.
        holder: String,
    },
    /// A pending change of this node was halted.
    Halted {
        /// Service name.
        service: String,
        /// The node that halted it.
        node: String,
        /// Why.
        reason: String,
    },
    /// Another master's record expired (its upkeep or the machine is down).
    MasterDown {
        /// Node name.
        node: String,
    },
    /// Another master's record cannot be read.
    MasterUnreadable {
        /// Node name.
        node: String,
        /// Why.
        why: String,
    },
    /// Another master has serial services that are not ready.
    MasterNotReady {
        /// Node name.
        node: String,
        /// The services not ready.
        services: Vec<String>,
    },
    /// An etcd alarm is raised.
    Alarm {
        /// `NOSPACE`, `CORRUPT`, ...
        kind: String,
        /// The member that raised it (name, or id in hex).
        member: String,
    },
    /// A learner is being caught up for promotion.
    Learner {
        /// Its name (or id in hex).
        member: String,
    },
    /// Taking this master's member down would cost quorum (or etcd has none).
    Quorum {
        /// Healthy voting members.
        healthy: usize,
        /// Voting members.
        voters: usize,
        /// Whether this master's member is one of the healthy voters.
        local_counts: bool,
    },
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::LockHeld { holder } => write!(f, "master {holder} holds the rollout lock"),
            Blocker::Halted {
                service,
                node,
                reason,
            } => write!(f, "rollout halted: {service} on {node}: {reason}"),
            Blocker::MasterDown { node } => {
                write!(f, "master {node} down: its record expired")
            }
            Blocker::MasterUnreadable { node, why } => {
                write!(f, "master {node} unknown: {why}")
            }
            Blocker::MasterNotReady { node, services } => {
                write!(f, "master {node} not ready: {}", services.join(", "))
            }
            Blocker::Alarm { kind, member } => {
                write!(f, "etcd alarm {kind} raised on member {member}")
            }
            Blocker::Learner { member } => {
                write!(f, "etcd learner {member} being promoted")
            }
            Blocker::Quorum {
                healthy,
                voters,
                local_counts,
            } => {
                if *local_counts {
                    write!(
                        f,
                        "etcd would lose quorum: {healthy} of {voters} voting members healthy"
                    )
                } else {
                    write!(
                        f,
                        "etcd has no quorum: {healthy} of {voters} voting members healthy"
                    )
                }
            }
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The step may go now.
    Go,
    /// Wait; every reason found, most specific first.
    Wait(Vec<Blocker>),
}

impl Decision {
    /// Whether the step may go.
    pub fn is_go(&self) -> bool {
        matches!(self, Decision::Go)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Go => write!(f, "go"),
            Decision::Wait(bs) => {
                for (i, b) in bs.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{b}")?;
                }
                Ok(())
            }
        }
    }
}

/// Quorum of `voters` voting members.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// The member this node hosts: the one named like the node (kubeadm names
/// members after their node), if any.
pub fn local_member(members: &[Member], node: &str) -> Option<u64> {
    members
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(node))
        .map(|m| m.id)
}

/// A healthy voting member other than `leader` to move leadership to: the
/// healthy voter with the highest raft index (least behind), ties by id.
pub fn choose_transferee(members: &[Member], health: &[MemberHealth], leader: u64) -> Option<u64> {
    members
        .iter()
        .filter(|m| !m.is_learner && m.id != leader)
        .filter_map(|m| {
            let h = health.iter().find(|h| h.id == m.id && h.healthy)?;
            Some((h.status.as_ref().map_or(0, |s| s.raft_index), m.id))
        })
        .max_by_key(|(index, id)| (*index, std::cmp::Reverse(*id)))
        .map(|(_, id)| id)
}

fn member_label(members: &[Member], id: u64) -> String {
    members
        .iter()
        .find(|m| m.id == id && !m.name.is_empty())
        .map_or_else(|| format!("{id:x}"), |m| m.name.clone())
}

/// Decides whether this node may take a planned step now.
pub fn decide(input: &GateInput<'_>) -> Decision {
    let mut out = Vec::new();
    let view = input.view;

    if let Some(holder) = &view.lock_holder {
        if holder != input.node {
            out.push(Blocker::LockHeld {
                holder: holder.clone(),
            });
        }
    }

    for (service, hash) in input.pending {
        if let Some(h) = view.halt_for(service, hash) {
            out.push(Blocker::Halted {
                service: service.clone(),
                node: h.node.clone(),
                reason: h.reason.clone(),
            });
        }
    }

    let others: BTreeSet<&String> = view
        .masters
        .iter()
        .chain(view.nodes.keys())
        .chain(view.unreadable.keys())
        .filter(|n| n.as_str() != input.node)
        .collect();
    for node in others {
        if let Some(why) = view.unreadable.get(node) {
            out.push(Blocker::MasterUnreadable {
                node: node.clone(),
                why: why.clone(),
            });
            continue;
        }
        let Some(rec) = view.nodes.get(node) else {
            out.push(Blocker::MasterDown { node: node.clone() });
            continue;
        };
        let not_ready: Vec<String> = rec
            .services
            .iter()
            .filter(|s| s.rollout == Rollout::Serial && !s.ready)
            .map(|s| s.name.clone())
            .collect();
        if !not_ready.is_empty() {
            out.push(Blocker::MasterNotReady {
                node: node.clone(),
                services: not_ready,
            });
        }
    }

    for a in input.alarms {
        out.push(Blocker::Alarm {
            kind: a.kind.clone(),
            member: member_label(input.members, a.member_id),
        });
    }
    for m in input.members.iter().filter(|m| m.is_learner) {
        out.push(Blocker::Learner {
            member: member_label(input.members, m.id),
        });
    }

    let healthy = |id: u64| input.health.iter().any(|h| h.id == id && h.healthy);
    let voters: Vec<&Member> = input.members.iter().filter(|m| !m.is_learner).collect();
    let healthy_voters = voters.iter().filter(|m| healthy(m.id)).count();
    let local_counts = input
        .local_member
        .is_some_and(|id| voters.iter().any(|m| m.id == id) && healthy(id));
    let after = healthy_voters - usize::from(local_counts);
    if voters.is_empty() || after < quorum(voters.len()) {
        out.push(Blocker::Quorum {
            healthy: healthy_voters,
            voters: voters.len(),
            local_counts,
        });
    }

    if out.is_empty() {
        Decision::Go
    } else {
        Decision::Wait(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Status;
    use crate::records::{Halt, NodeRecord, ServiceRecord};

    fn svc(name: &str, ready: bool, rollout: Rollout) -> ServiceRecord {
        ServiceRecord {
            name: name.into(),
            rollout,
            ready,
            spec_hash: "h1".into(),
            pending_hash: None,
            halted: false,
            message: None,
        }
    }

    fn node(name: &str, services: Vec<ServiceRecord>) -> NodeRecord {
        NodeRecord {
            node: name.into(),
            services,
        }
    }

    /// Three masters m1..m3, each with a ready apiserver, each hosting etcd
    /// member 1..3, all healthy.
    struct World {
        view: ClusterView,
        members: Vec<Member>,
        health: Vec<MemberHealth>,
        alarms: Vec<Alarm>,
        pending: Vec<(String, String)>,
    }

    impl World {
        fn healthy() -> World {
            let mut view = ClusterView::default();
            for n in ["m1", "m2", "m3"] {
                view.masters.insert(n.into());
                view.nodes.insert(
                    n.into(),
                    node(n, vec![svc("kube-apiserver", true, Rollout::Serial)]),
                );
            }
            let members = (1..=3)
                .map(|i| Member {
                    id: i,
                    name: format!("m{i}"),
                    peer_urls: vec![],
                    client_urls: vec![],
                    is_learner: false,
                })
                .collect();
            let health = (1..=3).map(|i| h(i, true, 10 * i)).collect();
            World {
                view,
                members,
                health,
                alarms: vec![],
                pending: vec![("kube-apiserver".into(), "h2".into())],
            }
        }

        fn decide(&self, node: &str) -> Decision {
            decide(&GateInput {
                view: &self.view,
                node,
                pending: &self.pending,
                local_member: local_member(&self.members, node),
                members: &self.members,
                health: &self.health,
                alarms: &self.alarms,
            })
        }

        fn set_health(&mut self, id: u64, healthy: bool) {
            for x in &mut self.health {
                if x.id == id {
                    x.healthy = healthy;
                }
            }
        }
    }

    fn h(id: u64, healthy: bool, raft_index: u64) -> MemberHealth {
        MemberHealth {
            id,
            healthy,
            reason: None,
            status: Some(Status {
                endpoint: String::new(),
                member_id: id,
                leader: 1,
                raft_term: 2,
                raft_index,
                version: "3.4.23".into(),
                db_size: 0,
                is_learner: false,
                errors: vec![],
            }),
        }
    }

    fn text(d: &Decision) -> String {
        d.to_string()
    }

    #[test]
    fn a_healthy_cluster_lets_a_master_step() {
        let w = World::healthy();
        assert_eq!(w.decide("m1"), Decision::Go);
    }

    #[test]
    fn the_lock_held_by_another_master_blocks_but_ours_does_not() {
        let mut w = World::healthy();
        w.view.lock_holder = Some("m2".into());
        assert_eq!(text(&w.decide("m1")), "master m2 holds the rollout lock");
        assert!(w.decide("m2").is_go());
    }

    #[test]
    fn another_master_not_ready_blocks_naming_its_services() {
        let mut w = World::healthy();
        w.view.nodes.insert(
            "m2".into(),
            node(
                "m2",
                vec![
                    svc("kube-apiserver", false, Rollout::Serial),
                    svc("etcd", false, Rollout::Serial),
                    svc("containerd", false, Rollout::Immediate),
                ],
            ),
        );
        assert_eq!(
            text(&w.decide("m1")),
            "master m2 not ready: kube-apiserver, etcd"
        );
        // Our own services' readiness is not the gate's business.
        assert!(w.decide("m2").is_go());
    }

    #[test]
    fn a_master_whose_record_expired_counts_as_down() {
        let mut w = World::healthy();
        w.view.nodes.remove("m3");
        assert_eq!(text(&w.decide("m1")), "master m3 down: its record expired");
        w.view
            .unreadable
            .insert("m3".into(), "invalid record: eof".into());
        assert_eq!(
            text(&w.decide("m1")),
            "master m3 unknown: invalid record: eof"
        );
    }

    #[test]
    fn quorum_with_this_master_down_is_required() {
        let mut w = World::healthy();
        w.set_health(2, false);
        assert_eq!(
            text(&w.decide("m1")),
            "etcd would lose quorum: 2 of 3 voting members healthy"
        );
        // m2 hosts the unhealthy member: stopping it costs nothing more.
        let d = w.decide("m2");
        assert!(d.is_go(), "{d}");
        // A master without an etcd member only needs etcd to have quorum.
        w.view.nodes.insert("w1".into(), node("w1", vec![]));
        assert!(w.decide("w1").is_go());
        w.set_health(3, false);
        assert_eq!(
            text(&w.decide("w1")),
            "etcd has no quorum: 1 of 3 voting members healthy"
        );
    }

    #[test]
    fn five_members_tolerate_one_down_while_a_master_steps() {
        let mut w = World::healthy();
        for i in 4..=5 {
            w.members.push(Member {
                id: i,
                name: format!("m{i}"),
                peer_urls: vec![],
                client_urls: vec![],
                is_learner: false,
            });
            w.health.push(h(i, true, 1));
            w.view.masters.insert(format!("m{i}"));
            w.view
                .nodes
                .insert(format!("m{i}"), node(&format!("m{i}"), vec![]));
        }
        w.set_health(5, false);
        assert!(w.decide("m1").is_go(), "4 healthy - 1 >= 3");
        w.set_health(4, false);
        assert_eq!(
            text(&w.decide("m1")),
            "etcd would lose quorum: 3 of 5 voting members healthy"
        );
    }

    #[test]
    fn learners_do_not_vote_and_block_while_promoted() {
        let mut w = World::healthy();
        w.members.push(Member {
            id: 0xab,
            name: String::new(),
            peer_urls: vec![],
            client_urls: vec![],
            is_learner: true,
        });
        w.health.push(h(0xab, true, 1));
        assert_eq!(text(&w.decide("m1")), "etcd learner ab being promoted");
    }

    #[test]
    fn alarms_block() {
        let mut w = World::healthy();
        w.alarms.push(Alarm {
            member_id: 2,
            kind: "NOSPACE".into(),
        });
        assert_eq!(
            text(&w.decide("m1")),
            "etcd alarm NOSPACE raised on member m2"
        );
    }

    #[test]
    fn a_halted_change_blocks_only_that_change() {
        let mut w = World::healthy();
        w.view.halts.push(Halt {
            service: "kube-apiserver".into(),
            hash: "h2".into(),
            node: "m2".into(),
            reason: "not ready within 5m".into(),
        });
        assert_eq!(
            text(&w.decide("m1")),
            "rollout halted: kube-apiserver on m2: not ready within 5m"
        );
        w.pending = vec![("kube-apiserver".into(), "h3".into())];
        assert!(w.decide("m1").is_go(), "another hash is another change");
    }

    #[test]
    fn every_reason_is_reported() {
        let mut w = World::healthy();
        w.view.lock_holder = Some("m3".into());
        w.view.nodes.remove("m2");
        w.set_health(2, false);
        let Decision::Wait(bs) = w.decide("m1") else {
            panic!("go")
        };
        assert_eq!(bs.len(), 3, "{bs:?}");
    }

    #[test]
    fn no_members_means_no_quorum() {
        let mut w = World::healthy();
        w.members.clear();
        w.health.clear();
        assert_eq!(
            text(&w.decide("m1")),
            "etcd has no quorum: 0 of 0 voting members healthy"
        );
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!(
            (1..=7).map(quorum).collect::<Vec<_>>(),
            vec![1, 2, 2, 3, 3, 4, 4]
        );
    }

    #[test]
    fn transferee_is_the_most_up_to_date_healthy_voter() {
        let mut w = World::healthy();
        assert_eq!(choose_transferee(&w.members, &w.health, 1), Some(3));
        w.set_health(3, false);
        assert_eq!(choose_transferee(&w.members, &w.health, 1), Some(2));
        w.set_health(2, false);
        assert_eq!(choose_transferee(&w.members, &w.health, 1), None);
    }
}
