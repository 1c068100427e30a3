//! The client, the lock and node records against one real etcd member.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};
use tokio::time::Instant;
use upkeep_cluster::gate::{decide, GateInput};
use upkeep_cluster::{
    clear_halts, read_view, record_halt, Acquire, ClientOptions, ClusterLock, Compare, EtcdClient,
    EtcdError, Halt, KeptLease, Keys, NodePublisher, NodeRecord, Rollout, ServiceRecord, TxnOp,
    TxnOpResult,
};

async fn single() -> (Cluster, EtcdClient) {
    let mut c = Cluster::start(1);
    let client = c.client();
    c.wait_healthy(&client).await;
    (c, client)
}

#[tokio::test]
async fn kv_put_get_prefix_delete_and_txn() {
    let (_etcd, client) = single().await;
    client.put(b"/t/a", b"1", 0).await.unwrap();
    client.put(b"/t/b", b"2", 0).await.unwrap();
    client.put(b"/u", b"3", 0).await.unwrap();
    let kv = client.get(b"/t/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.key.as_slice(), kv.value.as_slice()),
        (&b"/t/a"[..], &b"1"[..])
    );
    assert!(client.get(b"/nope").await.unwrap().is_none());
    let list = client.get_prefix(b"/t/").await.unwrap();
    assert_eq!(
        list.iter().map(|kv| kv.key_str()).collect::<Vec<_>>(),
        ["/t/a", "/t/b"]
    );
    // Put-if-absent: the lock's transaction.
    let t = client
        .txn(
            &[Compare::CreateRevision(b"/t/a".to_vec(), 0)],
            &[TxnOp::Put {
                key: b"/t/a".to_vec(),
                value: b"x".to_vec(),
                lease: 0,
            }],
            &[TxnOp::Get(b"/t/a".to_vec())],
        )
        .await
        .unwrap();
    assert!(!t.succeeded);
    match &t.results[..] {
        [TxnOpResult::Get(kvs)] => assert_eq!(kvs[0].value, b"1"),
        other => panic!("{other:?}"),
    }
    let t = client
        .txn(
            &[Compare::Value(b"/t/a".to_vec(), b"1".to_vec())],
            &[TxnOp::DeletePrefix(b"/t/".to_vec())],
            &[],
        )
        .await
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.results, vec![TxnOpResult::Delete(2)]);
    assert_eq!(client.delete(b"/u").await.unwrap(), 1);
    assert_eq!(client.delete(b"/u").await.unwrap(), 0);
}

#[tokio::test]
async fn leases_grant_renew_expire_and_revoke() {
    let (_etcd, client) = single().await;
    let lease = client.lease_grant(Duration::from_secs(5)).await.unwrap();
    assert_eq!(lease.ttl, Duration::from_secs(5));
    client.put(b"/l", b"v", lease.id).await.unwrap();
    assert_eq!(client.get(b"/l").await.unwrap().unwrap().lease, lease.id);
    assert_eq!(
        client.lease_keepalive(lease.id).await.unwrap(),
        Some(Duration::from_secs(5))
    );
    assert!(client.lease_time_to_live(lease.id).await.unwrap().is_some());
    client.lease_revoke(lease.id).await.unwrap();
    assert!(
        client.get(b"/l").await.unwrap().is_none(),
        "revoke deletes its keys"
    );
    assert_eq!(client.lease_keepalive(lease.id).await.unwrap(), None);
    assert_eq!(client.lease_time_to_live(lease.id).await.unwrap(), None);
    client.lease_revoke(lease.id).await.unwrap(); // idempotent
                                                  // etcd's own error, with the endpoint.
    let err = client.put(b"/l", b"v", 12345).await.unwrap_err();
    match &err {
        EtcdError::Etcd {
            endpoint, message, ..
        } => {
            assert!(message.contains("lease not found"), "{err}");
            assert!(endpoint.starts_with("http://127.0.0.1:"), "{err}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_dead_endpoint_fails_over_and_all_dead_is_a_bounded_error() {
    let (etcd, live) = single().await;
    // A port nobody listens on: bind, note, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let opts = |endpoints: Vec<String>| ClientOptions {
        endpoints,
        ca_file: None,
        cert_file: None,
        key_file: None,
        request_timeout: Duration::from_millis(500),
    };
    let client = EtcdClient::new(&opts(vec![dead.clone(), etcd.endpoints()[0].clone()])).unwrap();
    client.put(b"/f", b"1", 0).await.unwrap();
    assert_eq!(live.get(b"/f").await.unwrap().unwrap().value, b"1");
    let st = client.status().await.unwrap();
    assert_eq!(
        st.endpoint,
        etcd.endpoints()[0],
        "stays on the endpoint that works"
    );

    let none = EtcdClient::new(&opts(vec![dead.clone(), dead])).unwrap();
    let t0 = Instant::now();
    let err = none.get(b"/f").await.unwrap_err();
    assert!(
        matches!(err, EtcdError::AllFailed { tried: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_lock_has_exactly_one_holder_and_passes_on_release() {
    let (etcd, _) = single().await;
    let keys = Keys::new("/upkeep");
    let ttl = Duration::from_secs(5);
    let a = ClusterLock::new(etcd.client(), &keys, "m1", ttl);
    let b = ClusterLock::new(etcd.client(), &keys, "m2", ttl);
    let (ra, rb) = tokio::join!(a.try_acquire(), b.try_acquire());
    let (guard, loser, winner) = match (ra.unwrap(), rb.unwrap()) {
        (Acquire::Acquired(g), Acquire::Busy { holder }) => (g, b.clone(), (holder, "m1")),
        (Acquire::Busy { holder }, Acquire::Acquired(g)) => (g, a.clone(), (holder, "m2")),
        other => panic!("not exactly one holder: {other:?}"),
    };
    assert_eq!(winner.0, winner.1, "the loser sees the holder's name");
    assert_eq!(a.holder().await.unwrap().as_deref(), Some(winner.1));
    assert!(guard.is_held());
    guard.release().await.unwrap();
    assert_eq!(a.holder().await.unwrap(), None);
    match loser.try_acquire().await.unwrap() {
        Acquire::Acquired(g) => g.release().await.unwrap(),
        Acquire::Busy { holder } => panic!("still held by {holder}"),
    }
}

#[tokio::test]
async fn a_holder_that_dies_without_releasing_loses_the_lock_within_its_ttl() {
    let (etcd, _) = single().await;
    let keys = Keys::new("/upkeep");
    let ttl = Duration::from_secs(2);
    let a = ClusterLock::new(etcd.client(), &keys, "m1", ttl);
    let b = ClusterLock::new(etcd.client(), &keys, "m2", ttl);
    let Acquire::Acquired(guard) = a.try_acquire().await.unwrap() else {
        panic!("free lock not acquired")
    };
    // Renewals keep it beyond its TTL.
    tokio::time::sleep(ttl * 2).await;
    assert!(guard.is_held());
    assert!(matches!(b.try_acquire().await.unwrap(), Acquire::Busy { holder } if holder == "m1"));
    // Like a SIGKILL: renewals stop, nothing is revoked.
    drop(guard);
    let t0 = Instant::now();
    let g = wait_for(
        "m2 acquires the lock",
        ttl + Duration::from_secs(3),
        || async {
            match b.try_acquire().await {
                Ok(Acquire::Acquired(g)) => Some(g),
                _ => None,
            }
        },
    )
    .await;
    let took = t0.elapsed();
    assert!(took <= ttl + Duration::from_secs(2), "took {took:?}");
    assert_eq!(b.holder().await.unwrap().as_deref(), Some("m2"));
    g.release().await.unwrap();
}

#[tokio::test]
async fn losing_etcd_flips_the_held_receiver() {
    let (mut etcd, _) = single().await;
    let keys = Keys::new("/upkeep");
    let ttl = Duration::from_secs(3);
    let lock = ClusterLock::new(etcd.client(), &keys, "m1", ttl);
    let Acquire::Acquired(guard) = lock.try_acquire().await.unwrap() else {
        panic!("free lock not acquired")
    };
    let mut held = guard.held();
    assert!(*held.borrow());
    etcd.kill(0);
    let t0 = Instant::now();
    tokio::time::timeout(ttl + Duration::from_secs(1), held.wait_for(|h| !*h))
        .await
        .expect("held still true after the TTL")
        .unwrap();
    // Lost no later than the TTL, and at the first failed renewal (TTL/3
    // after the last one, plus one request timeout).
    assert!(t0.elapsed() <= ttl, "{:?}", t0.elapsed());
    assert!(!guard.is_held());
}

#[tokio::test]
async fn a_kept_lease_outlives_its_ttl_and_a_dropped_one_expires() {
    let (_etcd, client) = single().await;
    let lease = KeptLease::grant(&client, Duration::from_secs(2))
        .await
        .unwrap();
    let id = lease.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(client.lease_time_to_live(id).await.unwrap().is_some());
    drop(lease);
    wait_for(
        "the dropped lease to expire",
        Duration::from_secs(4),
        || async {
            client
                .lease_time_to_live(id)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}

fn record(node: &str, ready: bool) -> NodeRecord {
    NodeRecord {
        node: node.into(),
        services: vec![ServiceRecord {
            name: "kube-apiserver".into(),
            rollout: Rollout::Serial,
            ready,
            spec_hash: "h1".into(),
            pending_hash: (!ready).then(|| "h2".into()),
            halted: false,
            message: None,
        }],
    }
}

#[tokio::test]
async fn node_records_are_read_back_and_expire_with_their_upkeep() {
    let (_etcd, client) = single().await;
    let keys = Keys::new("/upkeep");
    let ttl = Duration::from_secs(2);
    let mut p1 = NodePublisher::new(client.clone(), keys.clone(), "m1", ttl);
    let mut p2 = NodePublisher::new(client.clone(), keys.clone(), "m2", ttl);
    p1.publish(&record("m1", true)).await.unwrap();
    p2.publish(&record("m2", false)).await.unwrap();
    p2.publish(&record("m2", true)).await.unwrap();
    // A bad record from someone else is reported, not trusted.
    client
        .put(keys.node("m3").as_bytes(), b"{", 0)
        .await
        .unwrap();
    record_halt(
        &client,
        &keys,
        &Halt {
            service: "etcd/etcd".into(),
            hash: "h9".into(),
            node: "m2".into(),
            reason: "not ready within 5m".into(),
        },
    )
    .await
    .unwrap();
    let view = read_view(&client, &keys).await.unwrap();
    assert_eq!(view.masters.iter().collect::<Vec<_>>(), ["m1", "m2", "m3"]);
    assert_eq!(view.nodes["m1"], record("m1", true));
    assert_eq!(view.nodes["m2"], record("m2", true));
    assert!(view.unreadable["m3"].contains("invalid record"));
    assert_eq!(view.halts.len(), 1);
    assert_eq!(view.halt_for("etcd/etcd", "h9").unwrap().node, "m2");
    assert_eq!(view.lock_holder, None);
    client.delete(keys.node("m3").as_bytes()).await.unwrap();
    client.delete(keys.master("m3").as_bytes()).await.unwrap();

    // m2's upkeep dies: its record expires, m2 stays known, and the gate on
    // m1 says so.
    drop(p2);
    let view = wait_for(
        "m2's record to expire",
        ttl + Duration::from_secs(3),
        || async {
            let v = read_view(&client, &keys).await.unwrap();
            (!v.nodes.contains_key("m2")).then_some(v)
        },
    )
    .await;
    assert!(view.masters.contains("m2"));
    let d = decide(&GateInput {
        view: &view,
        node: "m1",
        pending: &[],
        local_member: None,
        members: &client.member_list().await.unwrap(),
        health: &[client
            .member_health(&client.member_list().await.unwrap()[0])
            .await],
        alarms: &client.alarms().await.unwrap(),
    });
    assert_eq!(d.to_string(), "master m2 down: its record expired");

    // m1 is still published (its lease is renewed) and withdraws at once.
    assert!(view.nodes.contains_key("m1"));
    assert!(*p1.alive().borrow());
    p1.withdraw().await.unwrap();
    let view = read_view(&client, &keys).await.unwrap();
    assert!(view.nodes.is_empty());
    assert_eq!(clear_halts(&client, &keys, "etcd/etcd").await.unwrap(), 1);
    assert!(read_view(&client, &keys).await.unwrap().halts.is_empty());
}

#[tokio::test]
async fn a_full_database_raises_nospace_and_the_gate_says_so() {
    let mut etcd = Cluster::start_full(1, None, &["--quota-backend-bytes=1048576"]);
    let client = etcd.client();
    etcd.wait_healthy(&client).await;
    let big = vec![b'x'; 256 * 1024];
    let mut full = None;
    for i in 0..64 {
        if let Err(e) = client.put(format!("/big/{i}").as_bytes(), &big, 0).await {
            full = Some(e);
            break;
        }
    }
    let err = full.expect("a 1 MiB quota never filled");
    assert!(err.to_string().contains("database space exceeded"), "{err}");
    let alarms = client.alarms().await.unwrap();
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    assert_eq!(alarms[0].kind, "NOSPACE");
    let members = client.member_list().await.unwrap();
    assert_eq!(alarms[0].member_id, members[0].id);
    let health = vec![client.member_health(&members[0]).await];
    let view = read_view(&client, &Keys::new("/upkeep")).await.unwrap();
    let d = decide(&GateInput {
        view: &view,
        node: "m1",
        pending: &[],
        local_member: None,
        members: &members,
        health: &health,
        alarms: &alarms,
    });
    assert!(
        d.to_string()
            .contains("etcd alarm NOSPACE raised on member m1"),
        "{d}"
    );
}
