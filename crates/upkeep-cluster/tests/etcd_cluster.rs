//! Members, status, health, quorum and leadership against a real
//! three-member etcd cluster.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};
use upkeep_cluster::gate::{choose_transferee, decide, local_member, GateInput};
use upkeep_cluster::{ClusterView, EtcdClient, MemberHealth};

async fn three() -> (Cluster, EtcdClient) {
    let mut c = Cluster::start(3);
    let client = c.client();
    c.wait_healthy(&client).await;
    (c, client)
}

async fn health(client: &EtcdClient) -> Vec<MemberHealth> {
    let mut out = Vec::new();
    for m in client.member_list().await.unwrap() {
        out.push(client.member_health(&m).await);
    }
    out
}

#[tokio::test]
async fn members_status_health_and_the_quorum_gate() {
    let (mut etcd, client) = three().await;
    let members = client.member_list().await.unwrap();
    let mut names: Vec<_> = members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["m1", "m2", "m3"]);
    for m in &members {
        assert!(!m.is_learner);
        let ours = etcd.members.iter().find(|e| e.name == m.name).unwrap();
        assert_eq!(m.client_urls, vec![ours.client_url.clone()]);
        assert_eq!(m.peer_urls, vec![ours.peer_url.clone()]);
    }
    let st = client.status().await.unwrap();
    assert!(members.iter().any(|m| m.id == st.leader), "{st:?}");
    assert!(st.raft_term >= 1 && st.version.starts_with('3'), "{st:?}");
    assert!(st.errors.is_empty());
    // Every member agrees on the leader.
    for e in &etcd.members {
        assert_eq!(
            client.status_of(&e.client_url).await.unwrap().leader,
            st.leader
        );
    }
    assert!(client.alarms().await.unwrap().is_empty());

    let view = ClusterView::default();
    let h = health(&client).await;
    assert!(h.iter().all(|h| h.healthy), "{h:?}");
    let gate = |node: &'static str, h: Vec<MemberHealth>| {
        let members = members.clone();
        let view = view.clone();
        move || {
            decide(&GateInput {
                view: &view,
                node,
                pending: &[],
                local_member: local_member(&members, node),
                members: &members,
                health: &h,
                alarms: &[],
            })
        }
    };
    assert!(gate("m1", h)().is_go());

    // One member down: stepping a master that hosts a healthy member would
    // leave 1 of 3; the master whose member is down may step.
    etcd.kill(2);
    let down = members.iter().find(|m| m.name == "m3").unwrap().id;
    // (If m3 led, the others need an election before they serve reads.)
    let h = wait_for(
        "m3 unhealthy and the others healthy",
        Duration::from_secs(10),
        || async {
            let h = health(&client).await;
            h.iter().all(|x| x.healthy == (x.id != down)).then_some(h)
        },
    )
    .await;
    let m3 = h
        .iter()
        .find(|x| x.id == down)
        .and_then(|x| x.reason.clone())
        .unwrap();
    assert!(m3.contains("cannot connect"), "{m3}");
    assert_eq!(
        gate("m1", h.clone())().to_string(),
        "etcd would lose quorum: 2 of 3 voting members healthy"
    );
    assert!(gate("m3", h)().is_go());

    // The client fails over from the dead member.
    let only_dead_first = EtcdClient::new(&upkeep_cluster::ClientOptions {
        endpoints: vec![
            etcd.members[2].client_url.clone(),
            etcd.members[0].client_url.clone(),
        ],
        ca_file: None,
        cert_file: None,
        key_file: None,
        request_timeout: Duration::from_millis(500),
    })
    .unwrap();
    only_dead_first.put(b"/x", b"1", 0).await.unwrap();

    // Back: healthy again.
    etcd.restart(2);
    etcd.wait_healthy(&client).await;
    assert!(gate("m1", health(&client).await)().is_go());
}

#[tokio::test]
async fn leadership_moves_to_the_chosen_member() {
    let (_etcd, client) = three().await;
    let members = client.member_list().await.unwrap();
    let leader = client.status().await.unwrap().leader;
    let h = health(&client).await;
    let target = choose_transferee(&members, &h, leader).expect("a healthy follower");
    assert_ne!(target, leader);
    client.move_leader(target).await.unwrap();
    wait_for("the new leader", Duration::from_secs(5), || async {
        let st = client.status().await.ok()?;
        (st.leader == target).then_some(())
    })
    .await;
    // Moving to the leader itself is a no-op.
    client.move_leader(target).await.unwrap();
    // An unknown member is etcd's error, with its message.
    let err = client.move_leader(0x1234).await.unwrap_err();
    assert!(err.to_string().contains("bad leader transferee"), "{err}");
}
